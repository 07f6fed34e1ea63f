/**
 * The status page `fwcast serve` shows at /: plain HTML and a little script that
 * polls /api/v1/status every 2 s. Values go in with textContent only.
 */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fwcast serve</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f23; background: #fafbfc; }
  h1 { font-size: 1.4rem; margin: 0 0 .2rem; }
  h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
  #summary { color: #586069; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: .35rem .7rem; border-bottom: 1px solid #e1e4e8; white-space: nowrap; }
  th { background: #f1f3f5; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  code { font-size: 13px; }
  .state-live { color: #22863a; font-weight: 600; }
  .state-retired { color: #b31d28; }
  .state-superseded, .idle { color: #6a737d; }
  #error, #root-warnings { color: #b31d28; }
  #root-warnings { margin: .3rem 0 0; padding-left: 1.2rem; }
</style>
</head>
<body>
<h1>fwcast serve</h1>
<div id="summary">loading…</div>
<div id="error" role="alert"></div>
<div id="root" hidden><h2>Root of trust</h2><div id="root-summary"></div><ul id="root-warnings" role="alert"></ul></div>
<h2>Channels</h2>
<table id="channels">
  <thead><tr><th>Channel</th><th>Group</th><th>Release</th><th>Rounds</th><th>Packets</th><th>Rate</th><th>Listeners</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Releases</h2>
<table id="releases">
  <thead><tr><th>Model</th><th>Version</th><th>Seq</th><th>State</th><th>Size</th><th>Release id</th><th>Stored</th></tr></thead>
  <tbody></tbody>
</table>
<script>
'use strict';
function rate(bits) {
  if (bits >= 1e9) return (bits / 1e9).toFixed(2) + ' Gbit/s';
  if (bits >= 1e6) return (bits / 1e6).toFixed(1) + ' Mbit/s';
  return (bits / 1e3).toFixed(1) + ' kbit/s';
}
function size(n) {
  if (n >= 1048576) return (n / 1048576).toFixed(1) + ' MiB';
  if (n >= 1024) return (n / 1024).toFixed(1) + ' KiB';
  return n + ' B';
}
function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c.text;
    if (c.cls) td.className = c.cls;
    tr.appendChild(td);
  }
  return tr;
}
function listeners(l) {
  if (!l) return 'not followed (always sent)';
  return (l.present ? 'yes' : 'none') + (l.sending ? ', sending' : ', held') + (l.alwaysOn ? ' (always on)' : '');
}
function fill(id, rows) {
  document.querySelector('#' + id + ' tbody').replaceChildren(...rows);
}
async function refresh() {
  try {
    const res = await fetch('/api/v1/status', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const s = await res.json();
    document.getElementById('error').textContent = '';
    document.getElementById('summary').textContent =
      s.channels.length + ' channel(s) on ' + s.server.interface + ', budget ' + rate(s.server.rate) +
      ', sending ' + rate(s.channels.reduce((n, c) => n + c.rateBitsPerSecond, 0)) +
      ', up ' + s.server.uptimeSeconds + ' s';
    fill('channels', s.channels.map((c) => row(c.release ? [
      { text: c.channel }, { text: '[' + c.group + ']:' + c.port },
      { text: c.model + ' ' + c.release.version + ' (seq ' + c.release.seq + ')' },
      { text: String(c.rounds), cls: 'num' }, { text: String(c.packets), cls: 'num' }, { text: rate(c.rateBitsPerSecond), cls: 'num' },
      { text: listeners(c.listeners) },
    ] : [
      { text: c.channel }, { text: '[' + c.group + ']:' + c.port }, { text: c.model + ': no release', cls: 'idle' },
      { text: '–', cls: 'num' }, { text: '–', cls: 'num' }, { text: '–', cls: 'num' }, { text: listeners(c.listeners) },
    ])));
    fill('releases', s.releases.map((r) => row([
      { text: r.model }, { text: r.version }, { text: String(r.seq), cls: 'num' }, { text: r.state, cls: 'state-' + r.state },
      { text: r.state === 'retired' ? '–' : size(r.imageSize), cls: 'num' }, { text: r.releaseId }, { text: r.storedAt.replace('T', ' ').slice(0, 19) },
    ])));
    const root = document.getElementById('root');
    root.hidden = !s.root;
    if (s.root) {
      document.getElementById('root-summary').textContent = 'version ' + s.root.version + ', expires ' + s.root.expiresAt.replace('T', ' ').slice(0, 19) +
        ' UTC; carried on every channel: versions ' + s.root.carried.join(', ');
      document.getElementById('root-warnings').replaceChildren(...s.root.warnings.map((w) => {
        const li = document.createElement('li');
        li.textContent = w;
        return li;
      }));
    }
  } catch (err) {
    document.getElementById('error').textContent = 'status unavailable: ' + err.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;
