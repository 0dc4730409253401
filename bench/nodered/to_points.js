// Body of the peer's function node: a batch of MQTT messages -> InfluxDB points.
// In: msg.payload = the whole messages the join node collected ({topic, payload: parsed JSON}).
// Out: msg.payload = [{measurement, tags, fields, timestamp}] for the "influxdb batch" node.
// Nothing is validated. Left out is only what would make InfluxDB 1.x refuse the whole
// batch: values line protocol cannot carry ("unable to parse"), and a metric whose type
// (number, string, boolean) differs from its first value in the batch ("field type
// conflict", which for a field new to the measurement rejects every point of the write).
const kinds = global.get("kinds") || {};
const BAD_NAME = /[\r\n\\]/;
const fieldTypes = new Map(); // measurement + "\n" + field -> typeof its first value here
const points = [];
for (const m of msg.payload) {
    const levels = typeof m.topic === "string" ? m.topic.split("/") : [];
    const vendor = levels[1];
    const deviceId = levels[2];
    const kind = kinds[deviceId];
    const body = m.payload;
    if (!kind || !vendor || BAD_NAME.test(vendor) || BAD_NAME.test(deviceId)) {
        continue;
    }
    if (!body || typeof body.metrics !== "object" || body.metrics === null) {
        continue;
    }
    const fields = {};
    let count = 0;
    for (const name of Object.keys(body.metrics)) {
        const value = body.metrics[name];
        // The influx client writes a JS number as it prints it ("87", "87.5", "1e+21"):
        // never with an "i" suffix, so 87 and 87.5 are both floats and cannot conflict.
        const writable =
            (typeof value === "number" && Number.isFinite(value)) ||
            typeof value === "boolean" ||
            typeof value === "string";
        if (!writable || name === "" || BAD_NAME.test(name)) {
            continue;
        }
        const key = kind + "\n" + name;
        const first = fieldTypes.get(key);
        if (first === undefined) {
            fieldTypes.set(key, typeof value);
        } else if (first !== typeof value) {
            continue;
        }
        fields[name] = value;
        count += 1;
    }
    if (count === 0) {
        continue;
    }
    const point = { measurement: kind, tags: { device_id: deviceId, vendor: vendor }, fields: fields };
    const ts = typeof body.ts === "number" ? Math.round(body.ts) : NaN;
    if (Number.isSafeInteger(ts)) {
        point.timestamp = ts; // ms: the batch node writes with precision "ms"
    }
    points.push(point);
}
if (points.length === 0) {
    return null;
}
msg.payload = points;
return msg;
