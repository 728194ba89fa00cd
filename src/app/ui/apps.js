// The apps dashboard's script (strata serve), after the shared app.js: the apps'
// numbers kept live from the `apps` events of /ui/events, the YAML editor, and the
// actions. Every change is the App API's own call (the CLI's), sent from this origin
// with the page's credentials; its answer, a refusal's status and reason included,
// is shown in #message. No framework, no remote code.
'use strict';

(() => {
  // The shared app.js (loaded first) records errors and rejections and has `say`.
  const errors = () => (window.__strataErrors = window.__strataErrors || []);

  function setText(id, value) {
    const el = document.getElementById(id);
    if (el && el.textContent !== String(value)) el.textContent = String(value);
  }

  // An App API call: { ok, status, data } where data is the JSON answer (or text).
  async function api(method, path, body, type) {
    const init = { method, credentials: 'same-origin', headers: {} };
    if (body !== undefined) {
      init.headers['Content-Type'] = type || 'application/json';
      init.body = type ? body : JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const text = await r.text();
    let data = text;
    try { data = JSON.parse(text); } catch (_) { /* not JSON */ }
    return { ok: r.ok, status: r.status, data };
  }

  function reason(answer) {
    const d = answer.data;
    if (d && typeof d === 'object' && d.error) return d.error;
    return typeof d === 'string' ? d.trim() : JSON.stringify(d);
  }

  function refused(what, answer) {
    say(`${what} refused (${answer.status}): ${reason(answer)}`, true);
  }

  const appPath = (id) => `/v1/apps/${encodeURIComponent(id)}`;

  // ---- Live numbers -------------------------------------------------------------

  let refreshing = false;
  let again = false;

  // Parts of this page again from the server (escaped there): `ids` are replaced.
  async function refresh(ids) {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const r = await fetch(window.location.pathname + window.location.search, { credentials: 'same-origin' });
      if (!r.ok) return;
      const fresh = new DOMParser().parseFromString(await r.text(), 'text/html');
      for (const id of ids) {
        const old = document.getElementById(id);
        const now = fresh.getElementById(id);
        if (old && now) {
          old.innerHTML = now.innerHTML;
          if (typeof window.showTimes === 'function') window.showTimes(old);
        }
      }
    } catch (_) {
      // The live indicator says when the server is away.
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(ids); }
    }
  }

  let last = null;

  function onApps(apps) {
    let waiting = 0;
    for (const [id, n] of Object.entries(apps)) {
      setText(`running-${id}`, n.running);
      setText(`desired-${id}`, n.desired);
      setText(`healthy-${id}`, n.healthy);
      setText(`staged-${id}`, n.staged);
      setText(`version-${id}`, n.version);
      setText(`deployment-${id}`, n.deployment);
      const w = document.getElementById(`waiting-${id}`);
      if (w) {
        if (w.textContent !== n.waiting) w.textContent = n.waiting;
        w.hidden = !n.waiting;
      }
      if (n.waiting) waiting += 1;
    }
    const banner = document.getElementById('waiting-banner');
    if (banner) {
      banner.textContent = `${waiting} deployment(s) waiting: see below`;
      banner.hidden = waiting === 0;
    }
    const previous = last;
    last = apps;
    if (previous === null) return;
    // The apps table: rows for apps that came or went.
    const table = document.getElementById('apps');
    if (table) {
      const shown = [...table.querySelectorAll('tbody tr[data-app-id]')].map((r) => r.dataset.appId).sort();
      const now = Object.keys(apps).sort();
      if (shown.join('\n') !== now.join('\n')) refresh(['apps', 'app-count']);
    }
    // An app's page: its tasks, endpoints and last failure when its numbers changed
    // (not its waiting reason alone: that is shown above, and nothing below follows
    // it). The server sends an event only when something changed, never a countdown.
    const app = document.getElementById('app');
    if (app) {
      const id = app.dataset.appId;
      const sections = (n) => (n === undefined ? '' : JSON.stringify({ ...n, waiting: undefined }));
      const before = sections(previous[id]);
      const after = sections(apps[id]);
      if (before !== after) {
        if (apps[id] === undefined) say(`app ${id} is gone`, true);
        else refresh(['live-sections']);
      }
    }
  }

  // The shared app.js opens the page's one EventSource on /ui/events (and shows the
  // live indicator, and closes it when the page is left): the `apps` events are heard
  // on that same connection.
  document.addEventListener('strata:events', (ev) => {
    ev.detail.addEventListener('apps', (msg) => {
      try {
        onApps(JSON.parse(msg.data));
      } catch (e) {
        errors().push(String(e));
      }
    });
  });

  // ---- Versions -----------------------------------------------------------------

  function cell(row, text, cls) {
    const td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  async function loadVersions(id) {
    const table = document.getElementById('versions');
    const select = document.getElementById('rollback-version');
    if (!table) return;
    const body = table.tBodies[0];
    let answer;
    try {
      answer = await api('GET', `${appPath(id)}/versions`);
    } catch (e) {
      answer = { ok: false, status: 0, data: String(e) };
    }
    body.textContent = '';
    if (select) {
      while (select.options.length > 1) select.remove(1);
    }
    if (!answer.ok || !answer.data || !Array.isArray(answer.data.versions)) {
      const row = body.insertRow();
      const td = cell(row, `Version history unavailable (${answer.status}): ${reason(answer)}`, 'muted');
      td.colSpan = 4;
      return;
    }
    for (const v of answer.data.versions) {
      const row = body.insertRow();
      row.dataset.version = v.version;
      if (v.current) row.className = 'current';
      cell(row, v.current ? `${v.version} (current)` : v.version, 'id');
      // The config and secret versions its tasks get (a rollback gets them again).
      const pins = Object.entries(v.objects || {})
        .map(([key, n]) => `${key} ${n === 0 ? 'latest' : n}`)
        .join(', ');
      cell(row, pins ? `${v.cause || 'App API'}; ${pins}` : (v.cause || 'App API'));
      const spec = v.spec || {};
      cell(row, spec.instances === undefined ? '' : String(spec.instances));
      cell(row, spec.image ? `${spec.image} ${spec.cmd || ''}` : (spec.cmd || (spec.args || []).join(' ')));
      if (select && !v.current) {
        const option = document.createElement('option');
        option.value = v.version;
        option.textContent = v.version;
        select.appendChild(option);
      }
    }
    if (answer.data.versions.length === 0) {
      const td = cell(body.insertRow(), 'No versions.', 'muted');
      td.colSpan = 4;
    }
  }

  // ---- Actions ------------------------------------------------------------------

  function busy(el, on) {
    if (el) el.disabled = on;
  }

  async function act(what, button, method, path, body, done) {
    busy(button, true);
    try {
      const answer = await api(method, path, body);
      if (answer.ok) {
        say(done(answer.data), false);
        return answer;
      }
      refused(what, answer);
    } catch (e) {
      say(`${what} failed: ${e}`, true);
    } finally {
      busy(button, false);
    }
    return null;
  }

  function appPage(app) {
    const id = app.dataset.appId;
    loadVersions(id);
    const scale = document.getElementById('scale-form');
    if (scale) {
      scale.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const instances = Number(document.getElementById('scale-instances').value);
        act('scale', document.getElementById('scale'), 'POST', `${appPath(id)}/scale`, { instances },
          () => `scale: done, ${id} asks for ${instances} instance(s)`)
          .then((answer) => { if (answer) loadVersions(id); });
      });
    }
    const restart = document.getElementById('restart');
    if (restart) {
      restart.addEventListener('click', () => {
        act('restart', restart, 'POST', `${appPath(id)}/restart`, undefined,
          () => `restart: done, ${id}'s instances are replaced`)
          .then((answer) => { if (answer) loadVersions(id); });
      });
    }
    const rollback = document.getElementById('rollback-form');
    if (rollback) {
      rollback.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const version = document.getElementById('rollback-version').value;
        const body = version ? { version } : undefined;
        const answer = await act('roll back', document.getElementById('rollback'), 'POST',
          `${appPath(id)}/rollback`, body,
          (v) => `roll back: done, ${id} goes to ${version || 'the previous version'}${v && v.version ? ` (now version ${v.version})` : ''}`);
        if (answer) loadVersions(id);
      });
    }
    const remove = document.getElementById('remove');
    if (remove) {
      remove.addEventListener('click', async () => {
        if (!window.confirm(`Remove app ${id}? Its tasks are killed.`)) return;
        const answer = await act('remove', remove, 'DELETE', appPath(id), undefined,
          () => `remove: done, ${id} is being removed`);
        if (answer) window.setTimeout(() => window.location.assign('/'), 800);
      });
    }
  }

  // ---- The YAML editor ----------------------------------------------------------

  // Where `field` (`health_checks[0].port`) is written in `text`: each key in turn,
  // at the start of a line (indented, or after `- `), after the previous one.
  function findField(text, field) {
    let from = 0;
    let found = null;
    for (const part of field.split('.')) {
      const key = part.replace(/\[\d+\]/g, '');
      if (!key) continue;
      const escaped = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const re = new RegExp(`^[ \\t]*(?:- )?["']?${escaped}["']?[ \\t]*:`, 'mg');
      re.lastIndex = from;
      const m = re.exec(text);
      if (!m) break;
      found = { start: m.index, end: text.indexOf('\n', m.index) };
      from = re.lastIndex;
    }
    if (found && found.end < 0) found.end = text.length;
    return found;
  }

  function lineRange(text, line) {
    const lines = text.split('\n');
    const n = Math.min(Math.max(1, line), lines.length);
    let start = 0;
    for (let i = 0; i < n - 1; i += 1) start += lines[i].length + 1;
    return { start, end: start + lines[n - 1].length };
  }

  function markField(editor, field, line) {
    const text = editor.value;
    let range = null;
    if (Number.isInteger(line) && line > 0) range = lineRange(text, line);
    else if (field) range = findField(text, field);
    editor.focus();
    if (range) {
      editor.setSelectionRange(range.start, range.end);
      // Scroll the line into view: about where it is in the text.
      const lines = text.slice(0, range.start).split('\n').length;
      const height = editor.scrollHeight / Math.max(1, text.split('\n').length);
      editor.scrollTop = Math.max(0, (lines - 3) * height);
    }
    editor.dataset.selectedLine = range ? String(text.slice(0, range.start).split('\n').length) : '';
  }

  function editorPage(form) {
    const editor = document.getElementById('spec-editor');
    const error = document.getElementById('field-error');
    const button = document.getElementById('deploy');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const id = form.dataset.appId;
      error.hidden = true;
      busy(button, true);
      try {
        const answer = await api(id ? 'PUT' : 'POST', id ? appPath(id) : '/v1/apps', editor.value,
          'application/yaml');
        if (answer.ok) {
          const shown = (answer.data && answer.data.id) || id;
          say(`deploy: done, ${shown} is being deployed`, false);
          window.location.assign(`/ui/apps/${encodeURIComponent(shown)}`);
          return;
        }
        const d = answer.data && typeof answer.data === 'object' ? answer.data : {};
        const field = d.field || '';
        const line = Number.isInteger(d.line) ? d.line : null;
        error.dataset.field = field;
        error.dataset.line = line === null ? '' : String(line);
        error.textContent = field
          ? `${field}${line ? ` (line ${line})` : ''}: ${reason(answer)}`
          : reason(answer);
        error.hidden = false;
        refused('deploy', answer);
        markField(editor, field, line);
      } catch (e) {
        say(`deploy failed: ${e}`, true);
      } finally {
        busy(button, false);
      }
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    const app = document.getElementById('app');
    if (app) appPage(app);
    const form = document.getElementById('deploy-form');
    if (form) editorPage(form);
  });
})();
