// The Strata dashboard's script: times in the viewer's zone, and the overview's
// numbers kept live from /ui/events (server-sent events), with a visible
// "disconnected, retrying" while the master cannot be reached. No framework, no
// remote code.
'use strict';

// Errors of this page, for the tests (a browser has no console to read).
window.__strataErrors = [];
window.addEventListener('error', (e) => window.__strataErrors.push(String(e.message)));

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
  source.onopen = () => setLive(true);
  // The browser reconnects by itself; until then the page says so.
  source.onerror = () => setLive(false);
  // The first event says what the page was rendered with: rows are fetched again
  // only after a change.
  let first = true;
  source.addEventListener('overview', (ev) => {
    setLive(true);
    const numbers = JSON.parse(ev.data);
    for (const [name, value] of Object.entries(numbers)) {
      const el = document.getElementById(name.replace(/_/g, '-'));
      if (el) el.textContent = String(value);
    }
    if (!first) refreshAgents();
    first = false;
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

// Maintenance buttons: the same calls as `strata agent deactivate|drain|reactivate`,
// answered under the caller's ACLs; the answer (a refusal's reason too) is shown.
function say(text, bad) {
  const el = document.getElementById('message');
  if (!el) return;
  el.textContent = text;
  el.hidden = false;
  el.classList.toggle('bad', bad);
}

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
      window.setTimeout(() => window.location.reload(), 600);
    } else {
      say(`${action} refused (${r.status}): ${reason}`, true);
    }
  } catch (e) {
    say(`${action} failed: ${e}`, true);
  } finally {
    button.disabled = false;
  }
});
