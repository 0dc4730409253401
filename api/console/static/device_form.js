// A device's registry fields as form inputs, for the device page's edit form and the
// registry's register form. A draft keeps each input's text; it becomes the JSON the API
// takes (DeviceIn, DevicePatch in api/routes/devices.py) only when sent, so that the API
// judges every value and names the field it refuses.

import { h } from "./dom.js";

/** Roles the API lets register, change and decommission devices (WRITERS in api/routes/devices.py);
 * their grant is never narrowed to kinds, districts or a vendor (api/keys.py, check_grant). */
export const WRITER_ROLES = new Set(["admin", "operator"]);

export function mayWrite(session) {
  return WRITER_ROLES.has(session?.role);
}

const text = (value) => (value === null || value === undefined ? "" : String(value));

/** A number when the text is one; else the text as it is, which the API refuses by name. */
export function numberOf(value) {
  const n = Number(value);
  return value.trim() !== "" && Number.isFinite(n) ? n : value;
}

/** An attribute's value from its text: a number for the kind's numeric attributes. */
function attributeValue(attribute, value) {
  return attribute && attribute.type !== "str" ? numberOf(value) : value.trim();
}

function byTitle(app, ids, title) {
  return ids.map((id) => [id, title(id)]).sort((a, b) => a[1].localeCompare(b[1], app.i18n.locale));
}

/** The city's districts as [id, title] by title, and `keep` (a device's own) when the
 * reference data lacks it. */
export function districtChoices(app, keep = "") {
  const ids = Object.keys(app.catalogue.data.districts);
  if (keep && !ids.includes(keep)) ids.push(keep);
  return byTitle(app, ids, (id) => app.i18n.district(id));
}

/** The kinds as [id, title] by title. */
export function kindChoices(app) {
  return byTitle(app, app.catalogue.kindIds(), (id) => app.i18n.kind(id));
}

/** The inputs' text for `device` (none: an empty form). */
export function draftOf(device) {
  return {
    district: device?.district ?? "",
    lat: text(device?.lat),
    lon: text(device?.lon),
    address: device?.address ?? "",
    report_interval_s: text(device?.report_interval_s),
    install_date: device?.install_date ?? "",
    attributes: Object.fromEntries(Object.entries(device?.attributes ?? {}).map(([name, value]) => [name, text(value)])),
  };
}

/** A PATCH body of what `draft` changes of `device`: {} when nothing. An emptied attribute is
 * removed (null), an emptied install date cleared. */
export function patchOf(device, draft, kind) {
  const before = draftOf(device);
  const patch = {};
  if (draft.district !== before.district) patch.district = draft.district;
  if (draft.address.trim() !== before.address) patch.address = draft.address.trim();
  for (const name of ["lat", "lon", "report_interval_s"]) if (draft[name] !== before[name]) patch[name] = numberOf(draft[name]);
  if (draft.install_date !== before.install_date) patch.install_date = draft.install_date || null;
  const attributes = {};
  for (const [name, value] of Object.entries(draft.attributes)) {
    if (value === (before.attributes[name] ?? "")) continue;
    attributes[name] = value.trim() === "" ? null : attributeValue(kind?.attributesByName.get(name), value);
  }
  if (Object.keys(attributes).length) patch.attributes = attributes;
  return patch;
}

/** A POST /devices body from the register form's draft (its id, vendor and kind too). */
export function deviceOf(draft, kind) {
  const body = {
    device_id: draft.device_id.trim(),
    vendor: draft.vendor,
    kind: draft.kind,
    district: draft.district,
    lat: numberOf(draft.lat),
    lon: numberOf(draft.lon),
    address: draft.address.trim(),
    report_interval_s: numberOf(draft.report_interval_s),
    attributes: {},
  };
  if (draft.install_date) body.install_date = draft.install_date;
  for (const attribute of kind?.attributes ?? []) {
    const value = draft.attributes[attribute.name] ?? "";
    if (value.trim() !== "") body.attributes[attribute.name] = attributeValue(attribute, value);
  }
  return body;
}

/** The device as the API answered, in the console's device list (a new Map: views that sort
 * once per list sort it again). */
export function keepDevice(app, device) {
  app.devices = new Map(app.devices).set(device.id, device);
}

/** The fields' inputs, ids `${prefix}-…`, writing into `draft` as they are typed: address,
 * district, place, report interval, install date and the attributes of `kind` by title. */
export function registryFields(app, draft, kind, prefix) {
  const t = (key, params) => app.i18n.t(key, params);
  const field = (name, label, input) => h("div", { class: "field", dataset: { field: name } }, h("label", { for: input.id }, label), input);
  const input = (name, props) => {
    const el = h("input", { id: `${prefix}-${name.replaceAll("_", "-")}`, type: "text", ...props, on: { input: (e) => (draft[name] = e.currentTarget.value) } });
    el.value = draft[name];
    return el;
  };
  const district = h(
    "select",
    { id: `${prefix}-district`, on: { change: (e) => (draft.district = e.currentTarget.value) } },
    draft.district ? null : h("option", { value: "" }, t("devform.choose")),
    districtChoices(app, draft.district).map(([id, title]) => h("option", { value: id }, title)),
  );
  district.value = draft.district;
  return [
    field("address", t("device.address"), input("address", { maxlength: 500 })), // MAX_ADDRESS_CHARS
    field("district", t("device.district"), district),
    field("lat", t("devform.lat"), input("lat", { type: "number", step: "any", inputmode: "decimal" })),
    field("lon", t("devform.lon"), input("lon", { type: "number", step: "any", inputmode: "decimal" })),
    field("report_interval_s", t("devform.interval"), input("report_interval_s", { type: "number", step: "1", inputmode: "numeric" })),
    field("install_date", t("devform.install_date"), input("install_date", { type: "date" })),
    (kind?.attributes ?? []).map((attribute) => {
      const el = h("input", {
        id: `${prefix}-attr-${attribute.name}`,
        type: attribute.type === "str" ? "text" : "number",
        step: attribute.type === "str" ? null : "any",
        on: { input: (e) => (draft.attributes[attribute.name] = e.currentTarget.value) },
      });
      el.value = draft.attributes[attribute.name] ?? "";
      const label = app.i18n.attribute(kind.id, attribute.name);
      return h(
        "div",
        { class: "field", dataset: { attribute: attribute.name } },
        h("label", { for: el.id }, attribute.required ? t("devform.required", { label }) : label),
        el,
      );
    }),
  ];
}
