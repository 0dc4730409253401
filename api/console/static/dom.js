// Building DOM without HTML strings: every text goes in as a text node (textContent), so a
// string from the server can never become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, props) {
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name === "on") for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (name === "text") el.textContent = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("li", {class: "alert", dataset: {id}}, "text", childNode). */
export function h(tag, props, ...children) {
  return append(apply(document.createElement(tag), props), children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, props, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), props), children);
}

/** Replace every child of `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** The focused field inside `el` (its id and selection), kept across a re-render; null if none. */
export function focusOf(el) {
  const active = document.activeElement;
  return el.contains(active) && active.id ? { id: active.id, start: active.selectionStart, end: active.selectionEnd } : null;
}

/** Give the field `focused` (from focusOf) its focus and selection back after `el` was drawn anew. */
export function refocus(el, focused) {
  if (!focused) return;
  const field = el.querySelector(`#${CSS.escape(focused.id)}`);
  field?.focus();
  if (focused.start !== null && typeof field?.setSelectionRange === "function") field.setSelectionRange(focused.start, focused.end);
}

/** Ask `question()` for `room`, and give its answer to `took` or its error to `failed` unless
 * the room has asked again since (only the latest question's answer is shown: filters changed,
 * the room left). `room.busy` while asking, drawn before and after. */
export async function latestAnswer(room, question, took, failed) {
  const asked = ++room.asked;
  room.busy = true;
  room.render();
  try {
    const answer = await question();
    if (asked !== room.asked) return;
    took(answer);
  } catch (error) {
    if (asked !== room.asked) return;
    failed(error);
  }
  room.busy = false;
  room.render();
}
