// The part of libmime (the MIME library behind mailparser and mailauth) that the send API uses.
declare module "libmime" {
  const libmime: {
    /** Unfolds a header block and splits it into fields: name (trimmed, lower case) -> values. */
    decodeHeaders(headers: string): Record<string, string[]>;
    /** Decodes RFC 2047 encoded words ("=?utf-8?Q?...?="). */
    decodeWords(text: string): string;
  };
  export default libmime;
}
