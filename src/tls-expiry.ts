// mailraven_tls_certificate_expiry_timestamp_seconds: when each certificate the relay serves
// expires (ACME or certificate files), read from the running configuration at every scrape, so
// a SIGHUP with new files or an ACME renewal shows at once. The alert on it
// (contrib/prometheus/mailraven-rules.yml) fires before clients start refusing the handshake.

import { X509Certificate } from "node:crypto";
import { Gauge } from "prom-client";
import type { Metrics } from "./metrics.ts";
import { certificateNames, type Runtime, type TlsMaterial } from "./runtime.ts";

/** The certificates in use, by listener. */
function served(rt: Runtime): { listener: string; material: TlsMaterial }[] {
  const out: { listener: string; material: TlsMaterial }[] = [];
  if (rt.smtpTls) out.push({ listener: "smtp", material: rt.smtpTls });
  for (const s of rt.submissionTls) out.push({ listener: "submission", material: s });
  if (rt.adminTls) out.push({ listener: "admin", material: rt.adminTls });
  if (rt.apiTls) out.push({ listener: "api", material: rt.apiTls });
  return out;
}

export function registerCertificateExpiry(metrics: Metrics, runtime: () => Runtime): void {
  // Parsed once per certificate buffer; a new Runtime brings new buffers.
  const parsed = new WeakMap<Buffer, { name: string; notAfter: number } | null>();
  const read = (cert: Buffer) => {
    if (!parsed.has(cert)) {
      try {
        const x = new X509Certificate(cert);
        parsed.set(cert, { name: certificateNames(x)[0] ?? "", notAfter: Date.parse(x.validTo) / 1000 });
      } catch {
        parsed.set(cert, null);
      }
    }
    return parsed.get(cert)!;
  };
  new Gauge({
    name: "mailraven_tls_certificate_expiry_timestamp_seconds",
    help: "Unix time at which each served certificate expires (notAfter), by listener and first DNS name",
    labelNames: ["listener", "name"],
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const { listener, material } of served(runtime())) {
        const c = read(material.cert);
        if (c && Number.isFinite(c.notAfter)) this.set({ listener, name: c.name }, c.notAfter);
      }
    },
  });
}
