// REST calls to the node that served this page (Discord's API v10 paths).

export class APIError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function api(token) {
  return async function call(method, path, body) {
    const headers = { Authorization: token };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch('/api/v10' + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new APIError(res.status, data);
    return data;
  };
}
