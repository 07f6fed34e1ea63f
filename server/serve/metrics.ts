/**
 * Counters of the long-running server and their Prometheus text exposition
 * (format 0.0.4): per-channel packets, bytes and rounds from the Publisher,
 * uploads by result, rejections by reason, and live send rates.
 */
import { IPV6_UDP_HEADERS, type ChannelStats } from '../../carousel/publisher.js';
import { REJECTIONS } from './release-store.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export class ServeMetrics {
  readonly startedAt = Date.now();
  uploads = new Map<'stored' | 'duplicate', number>([['stored', 0], ['duplicate', 0]]);
  rejections = new Map<string, number>(Object.keys(REJECTIONS).map((r) => [r, 0]));
  retirements = 0;
  #rates = new Map<string, number>();
  #last: { at: number; bytes: Map<string, number> } | undefined;

  countUpload(result: 'stored' | 'duplicate'): void {
    this.uploads.set(result, (this.uploads.get(result) ?? 0) + 1);
  }

  countRejection(reason: string): void {
    this.rejections.set(reason, (this.rejections.get(reason) ?? 0) + 1);
  }

  /**
   * Samples the live channels' byte counters (wire bytes: payload + IPv6/UDP
   * headers); call about once a second. Rates are bits per second since the last sample.
   */
  sample(stats: ChannelStats[], now = performance.now()): void {
    const bytes = new Map<string, number>();
    for (const s of stats) bytes.set(`${s.channel} ${s.releaseId}`, s.bytes + s.packets * IPV6_UDP_HEADERS);
    if (this.#last) {
      const dt = (now - this.#last.at) / 1000;
      this.#rates.clear();
      for (const [key, b] of bytes) {
        const before = this.#last.bytes.get(key);
        if (before !== undefined && dt > 0) this.#rates.set(key, ((b - before) * 8) / dt);
      }
    }
    this.#last = { at: now, bytes };
  }

  /** Bits per second of a channel's release over the last sample interval (0 if unknown). */
  rate(channel: string, releaseId: string): number {
    return this.#rates.get(`${channel} ${releaseId}`) ?? 0;
  }

  /** The text exposition of everything above. `live` are the channels now on the air. */
  exposition(
    stats: ChannelStats[],
    live: Array<{ channel: string; model: string; releaseId: string; version: string; seq: number }>,
    extra: {
      rate: number; sendErrors: number; releases: Record<string, number>; connections?: { open: number; refused: Record<string, number> }; root?: { version: number; expires: number };
      /** Per channel, when serve follows listeners. */
      listeners?: Array<{ channel: string; present: boolean; sending: boolean }>;
    },
  ): string {
    const out: string[] = [];
    const metric = (name: string, type: 'counter' | 'gauge', help: string, rows: Array<[Record<string, string>, number]>): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of rows) {
        const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
        out.push(`${name}${l ? `{${l}}` : ''} ${Number.isFinite(value) ? value : 0}`);
      }
    };
    // A channel that got the same release twice (retired, then live again) shows once, summed.
    const perRelease = new Map<string, ChannelStats>();
    for (const s of stats) {
      const key = `${s.channel} ${s.releaseId}`;
      const seen = perRelease.get(key);
      perRelease.set(key, seen ? { ...seen, packets: seen.packets + s.packets, bytes: seen.bytes + s.bytes, rounds: seen.rounds + s.rounds } : { ...s });
    }
    const rows = [...perRelease.values()];
    const labels = (s: ChannelStats) => ({ channel: s.channel, release: s.releaseId });
    metric('fwcast_channel_packets_total', 'counter', 'Datagrams sent per channel and release.', rows.map((s) => [labels(s), s.packets]));
    metric('fwcast_channel_bytes_total', 'counter', 'UDP payload bytes sent per channel and release.', rows.map((s) => [labels(s), s.bytes]));
    metric('fwcast_channel_rounds_total', 'counter', 'Complete carousel rounds per channel and release.', rows.map((s) => [labels(s), s.rounds]));
    metric('fwcast_channel_rate_bits_per_second', 'gauge', 'Wire rate (IPv6 packets) per live channel over the last second.', live.map((c) => [{ channel: c.channel, release: c.releaseId }, this.rate(c.channel, c.releaseId)]));
    metric('fwcast_channel_live_release_seq', 'gauge', 'Sequence number of the release on the air per channel.', live.map((c) => [{ channel: c.channel, model: c.model, release: c.releaseId, version: c.version }, c.seq]));
    metric('fwcast_rate_limit_bits_per_second', 'gauge', 'Configured wire rate budget, all channels together.', [[{}, extra.rate]]);
    metric('fwcast_send_errors_total', 'counter', 'Datagrams the transport could not send.', [[{}, extra.sendErrors]]);
    metric('fwcast_uploads_total', 'counter', 'Accepted uploads by result.', [...this.uploads].map(([result, n]) => [{ result }, n]));
    metric('fwcast_upload_rejections_total', 'counter', 'Refused uploads and requests by reason.', [...this.rejections].map(([reason, n]) => [{ reason }, n]));
    metric('fwcast_retirements_total', 'counter', 'Releases retired through the API.', [[{}, this.retirements]]);
    metric('fwcast_releases', 'gauge', 'Releases in the store by state.', Object.entries(extra.releases).map(([state, n]) => [{ state }, n]));
    if (extra.connections) {
      metric('fwcast_http_connections', 'gauge', 'HTTP connections open now.', [[{}, extra.connections.open]]);
      metric('fwcast_http_connections_refused_total', 'counter', 'HTTP connections closed at once for a connection limit (total, per-client).',
        Object.entries(extra.connections.refused).map(([limit, n]) => [{ limit }, n]));
    }
    if (extra.root) {
      // Alert on time() > fwcast_root_expiry_timestamp_seconds - 30 days: agents install nothing under an expired root.
      metric('fwcast_root_version', 'gauge', 'Version of the newest root of trust carried on every channel.', [[{}, extra.root.version]]);
      metric('fwcast_root_expiry_timestamp_seconds', 'gauge', 'Unix time the newest root of trust expires.', [[{}, extra.root.expires]]);
    }
    if (extra.listeners) {
      metric('fwcast_channel_listeners', 'gauge', 'Whether the channel\'s group has listeners now (1) or not (0), as the listener source shows.',
        extra.listeners.map((l) => [{ channel: l.channel }, l.present ? 1 : 0]));
      metric('fwcast_channel_sending', 'gauge', 'Whether the channel is being sent (1: listeners, their linger, or always on) or held (0).',
        extra.listeners.map((l) => [{ channel: l.channel }, l.sending ? 1 : 0]));
    }
    metric('fwcast_start_time_seconds', 'gauge', 'Unix time the server started.', [[{}, Math.floor(this.startedAt / 1000)]]);
    return out.join('\n') + '\n';
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
