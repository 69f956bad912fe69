// Loaded by the viewer's index.html before OHIF's bundle (a file: the page's CSP allows no inline
// script). It does three things OHIF's configuration cannot:
// 1. Where OHIF lives: window.PUBLIC_URL (the release's own index.html sets it inline).
// 2. The bearer token on every DICOMweb request. The doctor's page (/doctor/) keeps the token in
//    sessionStorage['dicom-vault.token'] (same origin). OHIF's DICOMweb data source takes its
//    headers from its user authentication service, which only an OpenID setup or a `?token=` in
//    the URL fills (a token in a URL ends up in history and logs); cornerstone's image loader has
//    its own beforeSend. Wrapping fetch and XMLHttpRequest here covers all of them, for requests
//    to this node's DICOMweb prefix only.
// 3. Stop and say why when access ends. A revoked or expired grant reads as "not found" to the
//    node's DICOMweb (no existence oracle), and a running response under it is cut; 401 and 403
//    say so themselves. On any of these the script asks the node which of the caller's grants
//    still covers the study (GET /api/grantee/grants); when none does, it shows a banner with the
//    node's reason and refuses every further DICOMweb request, so the viewer stops loading.
(() => {
  const script = document.currentScript;
  const DICOMWEB = script?.dataset.dicomweb ?? '/dicom-web';
  const GRANTS = script?.dataset.grants ?? '/api/grantee/grants';
  const DOCTOR = script?.dataset.doctor ?? '/doctor/';
  const TOKEN_KEY = 'dicom-vault.token';
  const text = {
    stopped: 'The viewer has stopped loading images.',
    signIn: 'Not signed in: open the doctor’s page to sign in, then open the study again.',
    back: 'Back to your studies',
    refused: 'The node refused the request:',
    revoked: (id, at) => `Your access to this study has ended: grant ${id} was revoked by the patient at ${at}.`,
    expired: (id, at) => `Your access to this study has ended: grant ${id} expired at ${at}.`,
    none: 'Your access to this study has ended: no grant covers it any more.',
  };

  window.PUBLIC_URL = script?.dataset.publicUrl ?? '/viewer/';
  window.browserImportFunction = (name) => import(name);

  const token = sessionStorage.getItem(TOKEN_KEY);
  let stopped = false;

  const isDicomweb = (url) => {
    try {
      const u = new URL(url, location.href);
      return u.origin === location.origin && (u.pathname === DICOMWEB || u.pathname.startsWith(`${DICOMWEB}/`));
    } catch {
      return false;
    }
  };
  /** The study a DICOMweb URL is about: in its path, or searched for by UID. */
  const studyOf = (url) => {
    const u = new URL(url, location.href);
    return u.pathname.match(/\/studies\/([0-9.]+)/)?.[1] ?? u.searchParams.get('StudyInstanceUID') ?? undefined;
  };
  /** Statuses after which the caller's access to the study is checked: refused, or found to be gone (204, 404), or cut (0). */
  const suspect = (status) => status === 0 || status === 204 || status === 401 || status === 403 || status === 404;

  function stop(...lines) {
    if (stopped) return;
    stopped = true;
    const show = () => {
      const banner = document.createElement('div');
      banner.id = 'dicom-vault-stopped';
      banner.setAttribute('role', 'alert');
      for (const line of [...lines, text.stopped]) {
        const p = document.createElement('p');
        p.textContent = line;
        banner.append(p);
      }
      const a = document.createElement('a');
      a.href = DOCTOR;
      a.textContent = text.back;
      banner.append(a);
      document.body.prepend(banner);
      a.focus();
    };
    if (document.body) show();
    else document.addEventListener('DOMContentLoaded', show, { once: true });
  }

  if (!token) stop(text.signIn);

  const originalFetch = window.fetch.bind(window);
  let checking;
  /** After a failed request for `study`: is any grant of the caller still covering it? */
  function checkAccess(study, status, body) {
    if (stopped || checking) return;
    if (status === 401 || status === 403) {
      let reason = body;
      try {
        reason = JSON.parse(body).message ?? body;
      } catch {}
      stop(`${text.refused} ${reason || status}`);
      return;
    }
    if (study === undefined) return;
    checking = originalFetch(GRANTS, { headers: { authorization: `Bearer ${token}` } })
      .then(async (res) => {
        if (res.status === 401 || res.status === 403) {
          const json = await res.json().catch(() => ({}));
          return stop(`${text.refused} ${json.message ?? res.status}`);
        }
        if (!res.ok) return;
        const { grants } = await res.json();
        // A scope without studies or series is all of the patient's studies (perhaps of some modalities).
        const covering = grants.filter(
          (g) =>
            g.scope.studies?.includes(study) ||
            g.scope.series?.some((s) => s.study === study) ||
            (g.scope.studies === undefined && g.scope.series === undefined),
        );
        if (covering.some((g) => g.status === 'active')) return;
        const ended = covering[0];
        if (ended?.status === 'revoked') stop(text.revoked(ended.id, new Date(ended.revokedAt).toLocaleString()));
        else if (ended?.status === 'expired') stop(text.expired(ended.id, new Date(ended.notAfter).toLocaleString()));
        else stop(text.none);
      })
      .catch(() => {})
      .finally(() => {
        checking = undefined;
      });
  }

  window.fetch = async (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    if (!isDicomweb(url)) return originalFetch(input, init);
    if (stopped) throw new TypeError(text.stopped);
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    if (token && !headers.has('authorization')) headers.set('authorization', `Bearer ${token}`);
    let res;
    try {
      res = await originalFetch(input, { ...init, headers });
    } catch (err) {
      checkAccess(studyOf(url), 0, '');
      throw err;
    }
    if (suspect(res.status)) {
      checkAccess(
        studyOf(url),
        res.status,
        await res
          .clone()
          .text()
          .catch(() => ''),
      );
    }
    return res;
  };

  const open = XMLHttpRequest.prototype.open;
  const send = XMLHttpRequest.prototype.send;
  const setRequestHeader = XMLHttpRequest.prototype.setRequestHeader;
  const urls = new WeakMap();
  const authorized = new WeakSet();
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    urls.set(this, String(url));
    authorized.delete(this);
    return open.call(this, method, url, ...rest);
  };
  XMLHttpRequest.prototype.setRequestHeader = function (name, value) {
    if (name.toLowerCase() === 'authorization') authorized.add(this);
    return setRequestHeader.call(this, name, value);
  };
  XMLHttpRequest.prototype.send = function (body) {
    const url = urls.get(this);
    if (url === undefined || !isDicomweb(url)) return send.call(this, body);
    if (stopped) {
      // As a network error, which cornerstone's loader reports and does not retry forever.
      queueMicrotask(() => this.dispatchEvent(new ProgressEvent('error')));
      return;
    }
    if (token && !authorized.has(this)) setRequestHeader.call(this, 'authorization', `Bearer ${token}`);
    this.addEventListener('loadend', () => {
      const status = this.status;
      if (!suspect(status)) return;
      let body = '';
      try {
        if (this.responseType === '' || this.responseType === 'text') body = this.responseText;
        else if (this.response instanceof ArrayBuffer) body = new TextDecoder().decode(this.response);
      } catch {}
      checkAccess(studyOf(url), status, body);
    });
    return send.call(this, body);
  };
})();
