// The run page's live parts: stage statuses (polling the run's JSON while it is active) and
// the log pane (the stage log's SSE stream, kept in memory and drawn windowed: only the rows
// in view exist in the DOM, so a 100,000-line log costs a few dozen nodes).
(() => {
  'use strict';
  const root = document.getElementById('run');
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const api = `/api/v1/runs/${root.dataset.run}`;
  const ROW = 18; // px; .row's height in app.css
  const SPARE = 30; // rows drawn above and below the view
  const ACTIVE = ['queued', 'running'];
  const OPEN = ['pending', 'queued', 'running', 'waiting_approval'];
  let runStatus = root.dataset.status;

  // ---- statuses -------------------------------------------------------------------------
  const words = (s) => s.replace(/_/g, ' ');
  const since = (from, to) => {
    if (!from) return '';
    const secs = Math.max(0, Math.floor(((to ? Date.parse(to) : Date.now()) - Date.parse(from)) / 1000));
    if (secs < 60) return `${secs}s`;
    if (secs < 3600) return `${Math.floor(secs / 60)}m ${String(secs % 60).padStart(2, '0')}s`;
    return `${Math.floor(secs / 3600)}h ${String(Math.floor((secs % 3600) / 60)).padStart(2, '0')}m`;
  };
  const badge = (s) => {
    const span = document.createElement('span');
    span.className = `badge s-${s}`;
    span.textContent = words(s);
    return span;
  };

  function showStatuses(run) {
    runStatus = run.status;
    $('run-status').replaceChildren(badge(run.status));
    $('run-duration').textContent = since(run.started_at || run.created_at, run.finished_at);
    $('run-reason').textContent = run.reason ? ` · ${run.reason}` : '';
    const finished = !ACTIVE.includes(run.status);
    for (const form of document.querySelectorAll('[data-show]')) {
      form.hidden = (form.dataset.show === 'finished') !== finished;
    }
    for (const s of run.stages) {
      const duration = since(s.started_at, s.finished_at || (s.status === 'running' ? null : s.started_at));
      for (const node of document.querySelectorAll('.graph .node')) {
        if (node.dataset.key !== s.key) continue;
        const current = node.classList.contains('current') ? ' current' : '';
        node.setAttribute('class', `node s-${s.status}${current}`);
        node.setAttribute('aria-label', `${s.key}: ${words(s.status)}`);
        node.querySelector('.detail').textContent = `${words(s.status)} ${duration}`;
      }
      const row = [...document.querySelectorAll('tr[data-key]')].find((r) => r.dataset.key === s.key);
      if (row) {
        row.querySelector('.st').replaceChildren(badge(s.status));
        row.querySelector('.at').textContent = `${s.attempt}/${s.max_attempts}`;
        row.querySelector('.du').textContent = duration;
        row.querySelector('.err').textContent = s.error || '';
      }
      for (const el of document.querySelectorAll('[data-approval]')) {
        if (el.dataset.approval === s.key) el.hidden = s.status !== 'waiting_approval';
      }
      for (const el of document.querySelectorAll('[data-stage-cancel]')) {
        if (el.dataset.stageCancel === s.key) el.hidden = !OPEN.includes(s.status);
      }
      // The stage being followed started another attempt: follow that one.
      if (log.key === s.key && log.auto && s.attempt > log.attempt) openLog(s.key, s.attempt, true);
      // A shown approval was decided (here or elsewhere): say so instead of the question.
      else if (log.key === s.key && log.waiting && s.status !== 'waiting_approval') openLog(s.key, null, log.auto);
    }
  }

  async function poll() {
    try {
      const answer = await fetch(api, { headers: { accept: 'application/json' } });
      if (answer.ok) showStatuses(await answer.json());
    } catch (_) { /* the engine restarting: try again */ }
    if (ACTIVE.includes(runStatus)) setTimeout(poll, 1000);
  }

  // ---- ANSI colours ---------------------------------------------------------------------
  // SGR codes become classes (f0-f15 foreground, g0-g7 background, b bold, i italic, u
  // underline); every other escape sequence is dropped: other CSI sequences (cursor moves,
  // erasing), OSC strings (a window title, an OSC 8 link, of which the text stays), and the
  // short escapes (character sets, keypad modes). Text goes in via textContent only.
  const ESC = /\x1b\[([0-?]*)[ -\/]*([@-~])/g;
  const OTHER = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()*+#][0-9A-Za-z]|\x1b[=>78cDEHMNOZ\\]/g;
  const clean = (text) => text.replace(OTHER, '');
  const plain = (text) => clean(text).replace(ESC, '');
  function ansi(raw, into, needle) {
    const text = clean(raw);
    let state = { f: null, g: null, b: false, i: false, u: false };
    let last = 0;
    const emit = (chunk) => {
      if (!chunk) return;
      const cls = [state.f !== null ? `f${state.f}` : '', state.g !== null ? `g${state.g}` : '', state.b ? 'b' : '', state.i ? 'i' : '', state.u ? 'u' : ''].filter(Boolean).join(' ');
      const parts = needle ? split(chunk, needle) : [[chunk, false]];
      for (const [part, hit] of parts) {
        const el = document.createElement(hit ? 'mark' : 'span');
        if (cls) el.className = cls;
        el.textContent = part;
        into.appendChild(el);
      }
    };
    ESC.lastIndex = 0;
    for (let m; (m = ESC.exec(text));) {
      emit(text.slice(last, m.index));
      last = ESC.lastIndex;
      if (m[2] !== 'm') continue;
      const codes = m[1] === '' ? [0] : m[1].split(';').map(Number);
      for (let k = 0; k < codes.length; k++) {
        const c = codes[k];
        if (c === 0) state = { f: null, g: null, b: false, i: false, u: false };
        else if (c === 1) state.b = true;
        else if (c === 3) state.i = true;
        else if (c === 4) state.u = true;
        else if (c === 22) state.b = false;
        else if (c >= 30 && c <= 37) state.f = c - 30;
        else if (c >= 90 && c <= 97) state.f = c - 82;
        else if (c === 39) state.f = null;
        else if (c >= 40 && c <= 47) state.g = c - 40;
        else if (c === 49) state.g = null;
        else if ((c === 38 || c === 48) && codes[k + 1] === 5) {
          const n = codes[k + 2];
          if (c === 38 && n < 16) state.f = n;
          k += 2;
        } else if ((c === 38 || c === 48) && codes[k + 1] === 2) k += 4;
      }
    }
    emit(text.slice(last));
  }
  function split(text, needle) {
    const out = [];
    const low = text.toLowerCase();
    let at = 0;
    for (let i; (i = low.indexOf(needle, at)) !== -1; at = i + needle.length) {
      if (i > at) out.push([text.slice(at, i), false]);
      out.push([text.slice(i, i + needle.length), true]);
    }
    if (at < text.length) out.push([text.slice(at), false]);
    return out;
  }

  // ---- the log pane ---------------------------------------------------------------------
  const view = $('log-view');
  const spacer = $('log-spacer');
  const rows = $('log-rows');
  const log = { key: null, index: -1, attempt: 0, auto: true, lines: [], source: null, target: null, matches: [], match: -1, needle: '', waiting: false };
  let drawQueued = false;
  let programmaticScroll = false;
  const indexOf = (key) => {
    const node = [...document.querySelectorAll('tr[data-key]')].find((r) => r.dataset.key === key);
    return node ? Number(node.id.replace('stage-', '')) : -1;
  };
  const clock = (ms) => new Date(ms).toISOString().slice(11, 23);

  function queueDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(draw);
  }

  function draw() {
    drawQueued = false;
    const lines = log.lines;
    spacer.style.height = `${lines.length * ROW}px`;
    if ($('log-follow').checked && !log.target) {
      programmaticScroll = true;
      view.scrollTop = view.scrollHeight;
    }
    const first = Math.max(0, Math.floor(view.scrollTop / ROW) - SPARE);
    const last = Math.min(lines.length, Math.ceil((view.scrollTop + view.clientHeight) / ROW) + SPARE);
    rows.style.transform = `translateY(${first * ROW}px)`;
    const hits = new Set(log.matches);
    const selected = log.matches[log.match];
    const made = [];
    for (let i = first; i < last; i++) {
      const line = lines[i];
      const row = document.createElement('div');
      row.className = `row${line.stream === 'stderr' ? ' e' : line.stream === 'system' ? ' s' : ''}${hits.has(i) ? ' hit' : ''}${i === selected || line.n === log.target ? ' sel' : ''}`;
      row.dataset.n = line.n;
      const ln = document.createElement('a');
      ln.className = 'ln';
      ln.href = `#stage-${log.index}-L${line.n}`;
      ln.textContent = line.n;
      const ts = document.createElement('span');
      ts.className = 'ts';
      ts.textContent = clock(line.ts_ms);
      const tx = document.createElement('span');
      tx.className = 'tx';
      ansi(line.text, tx, hits.has(i) ? log.needle : '');
      row.append(ln, ts, tx);
      made.push(row);
    }
    rows.replaceChildren(...made);
  }

  function scrollToLine(n) {
    const i = log.lines.findIndex((l) => l.n === n);
    if (i < 0) return false;
    $('log-follow').checked = false;
    // Grow the scrollable height first, or the browser clamps the scroll to the old one.
    spacer.style.height = `${log.lines.length * ROW}px`;
    programmaticScroll = true;
    view.scrollTop = Math.max(0, i * ROW - view.clientHeight / 3);
    queueDraw();
    return true;
  }

  function setState(text) { $('log-state').textContent = text; }

  // A stage waiting for approval has no log yet (an approval-only stage never has one): the
  // pane shows its question with Approve and Reject (the stage row's own box, copied) instead.
  function showApproval(key, stage) {
    const row = [...document.querySelectorAll('tr[data-key]')].find((r) => r.dataset.key === key);
    const gate = !!row && row.hasAttribute('data-gate');
    const pane = $('log-approval');
    pane.replaceChildren();
    log.waiting = !!stage && stage.status === 'waiting_approval';
    if (log.waiting) {
      const box = [...document.querySelectorAll('tr [data-approval]')].find((b) => b.dataset.approval === key);
      if (box) {
        const copy = box.cloneNode(true);
        copy.hidden = false;
        pane.appendChild(copy);
      }
      setState(gate ? 'No log: this stage waits for approval.' : 'Waiting for approval: the stage runs once approved.');
      return gate;
    }
    if (!gate) return false;
    const outcome = stage && stage.approved_by ? ` Approved by ${stage.approved_by}.`
      : stage && stage.error ? ` ${stage.error.charAt(0).toUpperCase()}${stage.error.slice(1)}.` : '';
    setState(`No log: this stage only waits for approval.${outcome}`);
    return true;
  }

  async function openLog(key, attempt, auto) {
    if (log.source) log.source.close();
    Object.assign(log, { key, index: indexOf(key), lines: [], source: null, matches: [], match: -1, auto: !!auto });
    $('log-title').textContent = `· ${key}`;
    for (const node of document.querySelectorAll('.graph .node')) {
      node.classList.toggle('current', node.dataset.key === key);
    }
    const stageUrl = `${api}/stages/${encodeURIComponent(key)}`;
    let stage = null;
    try {
      const answer = await fetch(stageUrl, { headers: { accept: 'application/json' } });
      if (answer.ok) stage = await answer.json();
    } catch (_) { /* shown below */ }
    if (log.key !== key) return;
    log.attempt = attempt || (stage ? Math.max(1, stage.attempt) : 1);
    const select = $('log-attempt');
    select.replaceChildren();
    for (let a = Math.max(1, stage ? stage.attempt : 1); a >= 1; a--) {
      const option = document.createElement('option');
      option.value = a;
      option.textContent = a;
      option.selected = a === log.attempt;
      select.appendChild(option);
    }
    $('log-raw').href = `${stageUrl}/logs?attempt=${log.attempt}`;
    $('log-raw').setAttribute('download', `${key}-attempt-${log.attempt}.log`);
    const steps = $('log-steps');
    steps.replaceChildren();
    for (const step of (stage ? stage.steps : []).filter((s) => s.attempt === log.attempt)) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = step.first_line ? `#stage-${log.index}-L${step.first_line}` : '#';
      a.textContent = step.name;
      if (step.exit_code !== null && step.exit_code !== 0) li.className = 'fail';
      li.append(a, ` ${step.exit_code === null ? (step.finished_at ? '' : '…') : `exit ${step.exit_code}`}`);
      steps.appendChild(li);
    }
    setState(stage && stage.status === 'pending' ? 'Waiting for the stage to start…' : 'Loading…');
    // An approval-only stage runs nothing: no log stream to open.
    if (showApproval(key, stage)) { queueDraw(); return; }
    const source = new EventSource(`${stageUrl}/logs/stream?attempt=${log.attempt}`);
    log.source = source;
    source.onmessage = (event) => {
      log.lines.push(JSON.parse(event.data));
      if (log.needle && plain(log.lines[log.lines.length - 1].text).toLowerCase().includes(log.needle)) {
        log.matches.push(log.lines.length - 1);
        showMatches();
      }
      if (log.target && log.lines[log.lines.length - 1].n === log.target) scrollToLine(log.target);
      setState(`${log.lines.length} lines`);
      queueDraw();
    };
    source.addEventListener('end', () => {
      source.close();
      if (log.source === source) log.source = null;
      setState(`${log.lines.length} lines · the attempt has ended`);
      queueDraw();
    });
    queueDraw();
  }

  view.addEventListener('scroll', () => {
    // A person scrolling up stops following; scrolling back to the end follows again.
    if (!programmaticScroll) {
      $('log-follow').checked = view.scrollTop + view.clientHeight >= view.scrollHeight - ROW;
    }
    programmaticScroll = false;
    queueDraw();
  });
  $('log-follow').addEventListener('change', () => { log.target = null; queueDraw(); });
  $('log-ts').addEventListener('change', (e) => view.classList.toggle('show-ts', e.target.checked));
  $('log-attempt').addEventListener('change', (e) => openLog(log.key, Number(e.target.value), false));

  // ---- search ---------------------------------------------------------------------------
  function showMatches() {
    $('log-matches').textContent = log.needle
      ? `${log.matches.length ? log.match + 1 : 0} of ${log.matches.length}`
      : '';
  }
  function search() {
    log.needle = $('log-search').value.toLowerCase();
    log.matches = [];
    log.match = -1;
    if (log.needle) {
      log.lines.forEach((l, i) => { if (plain(l.text).toLowerCase().includes(log.needle)) log.matches.push(i); });
    }
    step(1);
  }
  function step(by) {
    if (!log.matches.length) { showMatches(); queueDraw(); return; }
    log.match = (log.match + by + log.matches.length) % log.matches.length;
    showMatches();
    scrollToLine(log.lines[log.matches[log.match]].n);
  }
  let searchTimer = 0;
  $('log-search').addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(search, 150); });
  $('log-search').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); clearTimeout(searchTimer); if (log.needle !== e.target.value.toLowerCase()) search(); else step(e.shiftKey ? -1 : 1); }
  });
  $('log-next').addEventListener('click', () => step(1));
  $('log-prev').addEventListener('click', () => step(-1));
  document.addEventListener('keydown', (e) => {
    if (e.key === '/' && !['INPUT', 'SELECT', 'TEXTAREA'].includes(document.activeElement.tagName)) {
      e.preventDefault();
      $('log-search').focus();
    }
  });

  // ---- choosing a stage, links to lines --------------------------------------------------
  const keyOfIndex = (index) => {
    const row = $(`stage-${index}`);
    return row ? row.dataset.key : null;
  };
  function fromHash() {
    const m = /^#stage-(\d+)(?:-L(\d+))?$/.exec(location.hash);
    if (!m) return false;
    const key = keyOfIndex(m[1]);
    if (!key) return false;
    const line = m[2] ? Number(m[2]) : null;
    if (key !== log.key) openLog(key, null, !line);
    log.target = line;
    if (line && !scrollToLine(line)) queueDraw();
    return true;
  }
  window.addEventListener('hashchange', fromHash);
  for (const node of document.querySelectorAll('.graph .node')) {
    node.addEventListener('click', (e) => {
      e.preventDefault();
      history.replaceState(null, '', `#stage-${indexOf(node.dataset.key)}`);
      log.target = null;
      openLog(node.dataset.key, null, true);
    });
  }
  for (const button of document.querySelectorAll('[data-open]')) {
    button.addEventListener('click', () => {
      history.replaceState(null, '', `#stage-${indexOf(button.dataset.open)}`);
      log.target = null;
      openLog(button.dataset.open, null, true);
      $('logs').scrollIntoView();
    });
  }

  // First: the linked stage, else the first running, failed or waiting one, else the first.
  const initial = () => {
    if (fromHash()) return;
    const rowsByStatus = (s) => [...document.querySelectorAll('tr[data-key]')].find((r) => r.querySelector(`.badge.s-${s}`));
    const row = rowsByStatus('running') || rowsByStatus('failed') || rowsByStatus('waiting_approval') || document.querySelector('tr[data-key]');
    if (row) openLog(row.dataset.key, null, true);
  };
  initial();
  if (ACTIVE.includes(runStatus)) setTimeout(poll, 1000);
})();
