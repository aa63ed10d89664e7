// The message pipeline: which checks run at each SMTP stage, in order. The mandatory ones
// (relay policy, size, line endings, hops) always run first; the optional defenses follow in
// the order the `pipeline` section gives (by default: every configured one).
//   connect -> blocklist, connection rate, DNS lists      (before the greeting, in parallel with its delay)
//   mail    -> rate limits
//   rcpt    -> relay policy, recipient validation, greylisting   (nothing is written for unknown recipients)
//   data    -> size, header size, NUL octets, bare newlines, hop count
//   content -> SPF/DKIM/DMARC/ARC, clamd, spamd           (may add and remove headers)
//   queue   -> queue/store.ts commits; deliver -> deliver/worker.ts

import type { AuthPolicy, Config } from "../config/types.ts";
import { ACCEPT } from "../verdict.ts";
import { authenticationCheck } from "./content/authentication.ts";
import { Pacer } from "./content/auth-budget.ts";
import { dkimSigning, signsFor, type DkimSigningOptions } from "./content/dkim-sign.ts";
import { DkimKeyCache } from "../dkim/keys.ts";
import { virusCheck } from "./content/clamd.ts";
import { spamCheck } from "./content/spamd.ts";
import { Resolver } from "../dns/resolver.ts";
import type { Logger } from "../log.ts";
import type { FailOpenCheck, Metrics } from "../metrics.ts";
import type { PolicyState } from "../state/types.ts";
import type { UserStore } from "../users/store.ts";
import { fromIdentity, senderIdentity } from "./submission/identity.ts";
import { userRateLimit } from "./submission/user-rate-limit.ts";
import { blocklistCheck } from "./connect/blocklist.ts";
import { connectionRateCheck } from "./connect/connection-rate.ts";
import { dnsblCache, dnsblCheck, type DnsblCache } from "./connect/dnsbl.ts";
import { bareNewline, headerSize, hopCount, messageSize, nulOctets } from "./data-policy.ts";
import { greylistCache, greylistCheck, type GreylistCache } from "./envelope/greylist.ts";
import { rateLimitCheck } from "./envelope/rate-limit.ts";
import { relayPolicy } from "./relay-policy.ts";
import { recipientValidation } from "./envelope/recipient-validation.ts";
import { RecipientVerifier } from "./envelope/recipient-verifier.ts";
import { assertProbeCompatible, probeRecipient } from "../deliver/probe.ts";
import type { Check, ConnectContext, ContentCheck, MailContext, Pipeline, RcptContext } from "./types.ts";

/** State the checks keep across configuration reloads. */
export interface PipelineServices {
  /** Greylisting, rate limits, the blocklist and the caches: this node's, or a cluster's in Redis. */
  readonly state: PolicyState;
  /** Submission users; null when submission is not configured. */
  readonly users: UserStore | null;
  readonly caches: { readonly dnsbl: DnsblCache; readonly greylist: GreylistCache };
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now: () => number;
  readonly dkimKeys: DkimKeyCache;
  /** Sender authentication's share of the event loop, over all messages. */
  readonly authPacer: Pacer;
  /** Recipient probes and their results, kept across reloads. */
  readonly verifier: RecipientVerifier;
}

export function pipelineServices(state: PolicyState, users: UserStore | null, metrics: Metrics, log: Logger, now: () => number = Date.now): PipelineServices {
  // lru-cache allocates its whole capacity up front (megabytes each): a cache is made the
  // first time a configured check asks for it, never for checks that are off.
  const dnsbl = once(dnsblCache);
  let greylistMade: ReturnType<typeof greylistCache> | null = null;
  const greylist = () => (greylistMade ??= greylistCache());
  // Triplets removed here or on another node must not live on in memory (a cache not made yet
  // holds none: a change notice does not make it).
  state.onGreylistChange(() => greylistMade?.clear());
  assertProbeCompatible();
  const verifier = new RecipientVerifier({
    cache: state,
    probe: probeRecipient,
    now,
    onProbe: (result, route, address, reply) => {
      metrics.recipientProbes.inc({ result });
      log.info("recipient probe", { route: route.uri, rcpt: address, result, reply });
    },
  });
  return {
    state,
    users,
    metrics,
    log,
    now,
    dkimKeys: new DkimKeyCache(now),
    verifier,
    authPacer: new Pacer(),
    caches: {
      get dnsbl() {
        return dnsbl();
      },
      get greylist() {
        return greylist();
      },
    },
  };
}

function once<T>(make: () => T): () => T {
  let value: T | undefined;
  return () => (value ??= make());
}

/** One reply serves every recipient, so the strictest policy among their domains applies. */
export function strictest(base: AuthPolicy, overrides: readonly Partial<AuthPolicy>[]): AuthPolicy {
  const all = overrides.length ? overrides.map((o) => ({ ...base, ...o })) : [base];
  return {
    spfFail: all.some((p) => p.spfFail === "reject") ? "reject" : "tag",
    dmarcReject: all.some((p) => p.dmarcReject),
    tempError: all.some((p) => p.tempError === "defer") ? "defer" : "accept",
  };
}

export function buildPipeline(config: Config, s: PipelineServices): Pipeline {
  const d = config.defenses;
  /** An optional check could not do its job and let the mail through: logged and counted, for alerts. */
  const failedOpen = (check: FailOpenCheck, msg: string, err: Error) => {
    s.metrics.failOpen.inc({ check });
    s.log.warn(msg, { error: err.message });
  };
  const resolver = new Resolver({ servers: config.dns.servers, timeoutMs: config.dns.timeoutMs, attempts: config.dns.attempts });
  const connectNamed: [string, Check<ConnectContext>][] = config.pipeline.connect.map((name) => [name, connectCheck(name)]);
  function connectCheck(name: (typeof config.pipeline.connect)[number]): Check<ConnectContext> {
    switch (name) {
      case "blocklist":
        return blocklistCheck(d.blocklist, s.state, s.now);
      case "connection_rate":
        return connectionRateCheck(d.connectionRate, s.state, s.now, config.smtp.ipv6PrefixLength);
      case "dnsbl":
        return dnsblCheck(d.dnsbl!, {
          resolver,
          cache: s.caches.dnsbl,
          onResult: (zone, result, err) => {
            s.metrics.dnsblResults.inc({ zone, result });
            if (err) {
              s.metrics.failOpen.inc({ check: "dnsbl" });
              s.log.warn("dns list lookup failed; treated as not listed", { zone, error: err.message });
            }
          },
        });
    }
  }
  const connect = connectNamed.map(([, c]) => c);
  const connectSubmission = connectNamed.filter(([n]) => n !== "dnsbl").map(([, c]) => c);
  const sub = config.submission;
  const users = s.users;
  const mail: Check<MailContext>[] = [
    ...(sub && users ? [senderIdentity(users), ...(sub.rateLimit ? [userRateLimit(sub.rateLimit, s.state, s.now)] : [])] : []),
    ...config.pipeline.mail.map(() => rateLimitCheck(d.rateLimits, s.state, s.now, config.smtp.ipv6PrefixLength)),
  ];
  const rcpt: Check<RcptContext>[] = [
    relayPolicy(config.relay, config.outbound.mxDelivery),
    ...(config.relay.recipients.size ? [recipientValidation(config.relay, (address, route) => s.verifier.verify(address, route, config.relay.recipientVerification, config.hostname))] : []),
    ...config.pipeline.rcpt.map(() => greylistCheck(d.greylist!, s.state, s.caches.greylist, s.now, (decision) => s.metrics.greylistDecisions.inc({ decision }))),
  ];
  const identityCheck: ContentCheck[] = sub && users ? [fromIdentity(users)] : [];
  const content: ContentCheck[] = identityCheck.concat(...config.pipeline.content.map((name): ContentCheck[] => {
    switch (name) {
      case "authentication": {
        const auth = d.authentication!;
        const check = authenticationCheck({
          authservId: auth.authservId,
          resolver: resolver.forMailauth,
          policy: (domains) => strictest(auth.policy, domains.map((dom) => config.domainPolicy.get(dom) ?? {})),
          onError: (err) => failedOpen("authentication", "sender authentication failed; accepted without a verdict", err),
          limits: { maxDkimSignatures: auth.maxDkimSignatures, maxArcSets: auth.maxArcSets, timeoutMs: auth.timeoutMs },
          pacer: s.authPacer,
          onLimit: (limit) => {
            s.metrics.authLimits.inc({ limit });
            if (limit === "deadline") s.log.warn("sender authentication not finished in time; treated as a DNS failure (temp_error)", { timeout_ms: auth.timeoutMs });
            else if (limit === "header_section") s.log.warn("sender authentication skipped: header section too large; treated as a DNS failure (temp_error)");
          },
        });
        // Our own servers' and users' outbound mail is not checked against its senders' SPF and DMARC.
        return [async (ctx) => (ctx.client.trusted || ctx.client.allowlisted || ctx.client.user !== null ? { verdict: ACCEPT } : check(ctx))];
      }
      case "clamd":
        return [
          virusCheck({ target: d.clamd!.target, timeoutMs: d.clamd!.timeoutMs, onError: (err) => failedOpen("clamd", "clamd scan failed; message accepted unscanned", err) }),
        ];
      case "spamd":
        return [
          spamCheck({
            target: d.spamd!.target,
            timeoutMs: d.spamd!.timeoutMs,
            tagScore: d.spamd!.tagScore,
            rejectScore: d.spamd!.rejectScore,
            onError: (err) => failedOpen("spamd", "spamd scan failed; message accepted unscanned", err),
          }),
        ];
    }
  }));
  // Signing comes last, so refused mail is never signed; it signs the client's message as received
  // (in its 7-bit, short-line form: smtp/signable.ts).
  const signing: DkimSigningOptions | null = config.outbound.dkimSign
    ? {
        keys: (domain) => s.dkimKeys.load(config.outbound.dkimDir, domain),
        anyKeys: () => s.dkimKeys.anyDomain(config.outbound.dkimDir),
        shouldSign: (ctx) => ctx.client.trusted || ctx.client.user !== null,
        onError: (err) => failedOpen("dkim_sign", "DKIM signing failed; message sent unsigned", err),
      }
    : null;
  const signer = signing ? dkimSigning(signing) : null;
  if (signer) content.push(signer);
  return {
    connect,
    connectSubmission,
    mail,
    rcpt,
    data: [messageSize(config.smtp.maxMessageSize), headerSize(config.smtp.maxHeaderSize, config.smtp.maxHeaderSection), nulOctets, bareNewline, hopCount(config.smtp.maxHops)],
    content,
    signer,
    signs: (client, head) => signing !== null && signsFor(signing, client, head),
  };
}
