// xtext (RFC 3461 section 4): the encoding of DSN's ENVID and ORCPT values and of AUTH=.
//   xtext   = *( xchar / hexchar )
//   xchar   = "!" .. "~" except "+" and "="
//   hexchar = "+" two upper-case hex digits

const XTEXT = /^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$/;

export function isXtext(value: string): boolean {
  return XTEXT.test(value);
}

/** The decoded value; call only on a value isXtext() accepted. */
export function decodeXtext(value: string): string {
  return value.replace(/\+([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}
