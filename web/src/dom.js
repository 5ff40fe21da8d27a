// Small DOM helpers: elements are built, never parsed from strings, so
// message content can never become markup.

export function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else if (k === 'selected') n.selected = true;
    else n.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c != null) n.append(c);
  return n;
}

export function clear(n) { n.replaceChildren(); }

export function when(id, event, fn) { document.getElementById(id).addEventListener(event, fn); }
