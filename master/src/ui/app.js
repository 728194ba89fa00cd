// The Strata dashboard's script: times in the viewer's zone, and the overview's
// numbers kept live from /ui/events (server-sent events), with a visible
// "disconnected, retrying" while the master cannot be reached. No framework, no
// remote code.
'use strict';

// Errors of this page, for the tests (a browser has no console to read).
window.__strataErrors = [];
window.addEventListener('error', (e) => window.__strataErrors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.__strataErrors.push(String(e.reason)));
// What the Content-Security-Policy blocked (an inline style, a remote URL): a bug here.
document.addEventListener('securitypolicyviolation', (e) =>
  window.__strataErrors.push(`CSP ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`));

function showTimes(root) {
  for (const t of root.querySelectorAll('time[data-unix]')) {
    const seconds = Number(t.dataset.unix);
    if (!seconds) continue;
    const d = new Date(seconds * 1000);
    t.dateTime = d.toISOString();
    t.textContent = d.toLocaleString();
  }
}

function setLive(on) {
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = on ? 'live' : 'disconnected, retrying';
  el.classList.toggle('offline', !on);
}

function follow() {
  if (!window.EventSource) return;
  const source = new EventSource('/ui/events');
  // Leaving the page ends the stream: a page kept in the back/forward cache would
  // otherwise hold one of the browser's few connections to this server (6 over
  // HTTP/1.1) until they are all taken and every request waits.
  window.addEventListener('pagehide', () => source.close());
  // A page's own script (the apps dashboard's) listens to its events on this stream.
  document.dispatchEvent(new CustomEvent('strata:events', { detail: source }));
  source.onopen = () => setLive(true);
  // The browser reconnects by itself; until then the page says so.
  source.onerror = () => setLive(false);
  // The first event says what the page was rendered with: rows are fetched again
  // only after a change of what they show (agents' states and use), not of every
  // number (the allocation's run time changes all the time).
  let shown = null;
  source.addEventListener('overview', (ev) => {
    setLive(true);
    const numbers = JSON.parse(ev.data);
    for (const [name, value] of Object.entries(numbers)) {
      const el = document.getElementById(name.replace(/_/g, '-'));
      if (el) el.textContent = String(value);
    }
    const rows = ['agents_active', 'agents_total', 'agents_disconnected', 'agents_unreachable',
      'agents_maintenance',
      'cpus_used', 'cpus_total', 'mem_used', 'mem_total', 'disk_used', 'disk_total',
      'tasks_running', 'tasks_staging'].map((k) => numbers[k]).join(' ');
    if (shown !== null && rows !== shown) refreshAgents();
    shown = rows;
  });
}

// Something changed: the agents table's rows again, from the server (escaped there).
async function refreshAgents() {
  const table = document.getElementById('agents');
  if (!table) return;
  try {
    const r = await fetch(`/ui/agents/rows?page=${table.dataset.page || 1}`, { credentials: 'same-origin' });
    if (!r.ok) return;
    const body = table.querySelector('tbody');
    body.innerHTML = await r.text();
    showTimes(body);
  } catch (_) {
    // The feed says when the master is away.
  }
}

document.addEventListener('DOMContentLoaded', () => {
  showTimes(document);
  follow();
});

// Back to a page from the back/forward cache: its stream was closed, load it anew.
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted) window.location.reload();
});

// An action's answer (a refusal's reason too) in #message; the apps dashboard's
// script uses it as well.
function say(text, bad) {
  const el = document.getElementById('message');
  if (!el) return;
  el.textContent = text;
  el.hidden = false;
  el.classList.toggle('bad', bad);
}

// Maintenance buttons: the same calls as `strata agent deactivate|drain|reactivate`,
// answered under the caller's ACLs.
document.addEventListener('click', async (ev) => {
  const button = ev.target.closest('button.action');
  if (!button) return;
  const { action, agentId } = button.dataset;
  if (action === 'drain' && !window.confirm(`Drain agent ${agentId}? Its tasks are killed.`)) return;
  button.disabled = true;
  try {
    const r = await fetch(`/maintenance/${action}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify({ agent_id: agentId }),
    });
    let reason = '';
    try { reason = (await r.json()).error || ''; } catch (_) { /* not JSON */ }
    if (r.ok) {
      say(`${action}: done for agent ${agentId}`, false);
      refreshAgents();
    } else {
      say(`${action} refused (${r.status}): ${reason}`, true);
    }
  } catch (e) {
    say(`${action} failed: ${e}`, true);
  } finally {
    button.disabled = false;
  }
});

// The task page: the sandbox browsed and a file tailed through the master's relay
// (/ui/tasks/{id}/files/browse and /read). Text goes in with textContent only.
const TAIL_CHUNK = 64 * 1024;
// The most of a file the page keeps; older text is dropped from the top.
const TAIL_KEEP = 512 * 1024;

function sandboxPage() {
  const tail = document.getElementById('tail');
  if (!tail) return;
  const base = tail.dataset.base;
  const framework = encodeURIComponent(tail.dataset.framework || '');
  const follow = document.getElementById('follow');
  const state = { source: { file: 'stdout' }, offset: null, timer: null, gen: 0 };

  function showError(id, text) {
    const el = document.getElementById(id);
    el.textContent = text;
    el.hidden = !text;
  }

  async function getJson(url) {
    const r = await fetch(url, { credentials: 'same-origin' });
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) throw new Error(`${r.status}: ${(body && body.error) || r.statusText}`);
    return body;
  }

  function sourceQuery(source) {
    return source.file ? `file=${source.file}` : `path=${encodeURIComponent(source.path)}`;
  }

  // Reads what is new from the offset on; the first read starts near the end.
  async function poll(gen) {
    if (gen !== state.gen) return;
    try {
      if (state.offset === null) state.offset = await startOffset(state.source);
      let more = true;
      while (more && gen === state.gen) {
        const chunk = await getJson(`${base}/read?framework=${framework}&${sourceQuery(state.source)}&offset=${state.offset}&length=${TAIL_CHUNK}`);
        if (gen !== state.gen) return;
        if (typeof chunk.size === 'number' && chunk.size < state.offset) {
          // Truncated (or replaced) since the last read: from its start again.
          append('\n--- the file was truncated ---\n');
          state.offset = 0;
          continue;
        }
        if (chunk.data) append(chunk.data);
        state.offset = chunk.next_offset;
        more = !chunk.eof;
      }
      showError('tail-error', '');
    } catch (e) {
      showError('tail-error', `cannot read ${state.source.file || state.source.path}: ${e.message}`);
    }
    if (gen === state.gen && follow && follow.checked) {
      state.timer = window.setTimeout(() => poll(gen), 1000);
    }
  }

  // Where the tail starts: the last TAIL_CHUNK bytes, by the size the listing shows.
  async function startOffset(source) {
    const path = source.file || source.path;
    const slash = path.lastIndexOf('/');
    const dir = slash < 0 ? '' : path.slice(0, slash);
    const name = path.slice(slash + 1);
    try {
      const listing = await getJson(`${base}/browse?framework=${framework}&path=${encodeURIComponent(dir)}`);
      const entry = (listing.entries || []).find((e) => e.name === name);
      return entry ? Math.max(0, entry.size - TAIL_CHUNK) : 0;
    } catch (_) {
      return 0;
    }
  }

  function append(text) {
    const atBottom = tail.scrollTop + tail.clientHeight >= tail.scrollHeight - 4;
    let all = tail.textContent + text;
    if (all.length > TAIL_KEEP) all = all.slice(all.length - TAIL_KEEP);
    tail.textContent = all;
    if (atBottom) tail.scrollTop = tail.scrollHeight;
  }

  function open(source) {
    window.clearTimeout(state.timer);
    state.gen += 1;
    state.source = source;
    state.offset = null;
    tail.textContent = '';
    document.getElementById('tail-name').textContent = source.file || source.path;
    for (const b of document.querySelectorAll('button.tail-file')) {
      b.setAttribute('aria-pressed', String(b.dataset.file === source.file));
    }
    poll(state.gen);
  }

  function human(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  }

  async function browse(path) {
    const crumbs = document.getElementById('sandbox-path');
    const rows = document.querySelector('#files tbody');
    try {
      const listing = await getJson(`${base}/browse?framework=${framework}&path=${encodeURIComponent(path)}`);
      crumbs.textContent = '';
      const parts = listing.path ? listing.path.split('/') : [];
      const root = document.createElement('a');
      root.href = '#';
      root.textContent = 'sandbox';
      root.dataset.dir = '';
      crumbs.append(root);
      parts.forEach((part, i) => {
        crumbs.append(' / ');
        const a = document.createElement('a');
        a.href = '#';
        a.textContent = part;
        a.dataset.dir = parts.slice(0, i + 1).join('/');
        crumbs.append(a);
      });
      rows.textContent = '';
      for (const e of listing.entries || []) {
        const tr = document.createElement('tr');
        tr.dataset.path = e.path;
        const name = document.createElement('td');
        if (e.kind === 'dir' || e.kind === 'file') {
          const a = document.createElement('a');
          a.href = '#';
          a.textContent = e.kind === 'dir' ? `${e.name}/` : e.name;
          a.dataset[e.kind === 'dir' ? 'dir' : 'file'] = e.path;
          name.append(a);
        } else {
          name.textContent = `${e.name} (${e.kind})`;
        }
        const size = document.createElement('td');
        size.textContent = e.kind === 'file' ? human(e.size) : '';
        const mode = document.createElement('td');
        mode.textContent = e.mode;
        const time = document.createElement('td');
        const t = document.createElement('time');
        t.dataset.unix = String(e.mtime);
        time.append(t);
        tr.append(name, size, mode, time);
        rows.append(tr);
      }
      if (listing.truncated) {
        const tr = document.createElement('tr');
        const td = document.createElement('td');
        td.colSpan = 4;
        td.className = 'muted';
        td.textContent = 'More entries than the agent lists.';
        tr.append(td);
        rows.append(tr);
      }
      showTimes(rows);
      showError('sandbox-error', '');
    } catch (e) {
      showError('sandbox-error', `cannot list the sandbox: ${e.message}`);
    }
  }

  document.addEventListener('click', (ev) => {
    const a = ev.target.closest('#files a, #sandbox-path a');
    if (a) {
      ev.preventDefault();
      if (a.dataset.file !== undefined) {
        const path = a.dataset.file;
        open(path === 'stdout' || path === 'stderr' ? { file: path } : { path });
      } else {
        browse(a.dataset.dir || '');
      }
      return;
    }
    const b = ev.target.closest('button.tail-file');
    if (b) open({ file: b.dataset.file });
  });
  if (follow) {
    follow.addEventListener('change', () => {
      window.clearTimeout(state.timer);
      if (follow.checked) poll(state.gen);
    });
  }
  open(state.source);
  browse('');
}

document.addEventListener('DOMContentLoaded', sandboxPage);

// A role's weight, set from the frameworks page: the same call as `curl -X PUT
// /weights` (the README's), under the caller's ACLs (update_weights); the answer shown.
document.addEventListener('submit', async (ev) => {
  const form = ev.target.closest('form.weight');
  if (!form) return;
  ev.preventDefault();
  const role = form.dataset.role;
  const weight = Number(form.elements.weight.value);
  const button = form.querySelector('button');
  button.disabled = true;
  try {
    const r = await fetch('/weights', {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify([{ role, weight }]),
    });
    const text = await r.text();
    let reason = text.trim();
    try { reason = JSON.parse(text).error || reason; } catch (_) { /* plain text */ }
    if (r.ok) say(`weight of role ${role}: ${weight}`, false);
    else say(`setting the weight of role ${role} refused (${r.status}): ${reason}`, true);
  } catch (e) {
    say(`setting the weight of role ${role} failed: ${e}`, true);
  } finally {
    button.disabled = false;
  }
});
