// MQTT.js (from npm) clients over WebSocket, driven by tests/ops_websocket.rs.
//
//   node mqttjs.mjs roundtrip URL VERSION [CA]   QoS 0/1/2 round trips and a retained message
//   node mqttjs.mjs sub URL VERSION TOPIC N [CA] print READY, then N messages as JSON lines
//   node mqttjs.mjs pub URL VERSION TOPIC PAYLOAD QOS [CA]
//   node mqttjs.mjs will URL VERSION TOPIC [CA]  connect with a will, print READY, drop the socket
//
// VERSION is 4 (MQTT 3.1.1) or 5. CA is a PEM file trusted for wss://. Prints OK on success;
// any failure exits non-zero with a message on stderr.
import fs from 'node:fs';
import mqtt from 'mqtt';

const [cmd, url, version, ...rest] = process.argv.slice(2);

function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

setTimeout(() => fail('timeout'), 8000).unref();

function connect(extra = {}, caFile) {
  const opts = {
    protocolVersion: Number(version),
    reconnectPeriod: 0,
    connectTimeout: 5000,
    clean: true,
    ...extra,
  };
  if (caFile) opts.ca = fs.readFileSync(caFile);
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, opts);
    c.once('connect', () => resolve(c));
    c.once('error', reject);
    c.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

function nextMessage(client) {
  return new Promise((resolve) => {
    client.once('message', (topic, payload, packet) => resolve({ topic, payload, packet }));
  });
}

const unique = `${process.pid}-${Date.now()}`;

async function roundtrip(caFile) {
  const a = await connect({ clientId: `ws-a-${unique}` }, caFile);
  const base = `ws/${unique}`;
  await a.subscribeAsync(`${base}/#`, { qos: 2 });
  for (const qos of [0, 1, 2]) {
    const payload = Buffer.alloc(1000 + qos * 70000, qos + 65); // up to ~140 KB: many frames
    const got = nextMessage(a);
    await a.publishAsync(`${base}/q${qos}`, payload, { qos });
    const m = await got;
    if (m.topic !== `${base}/q${qos}`) fail(`topic ${m.topic}`);
    if (!m.payload.equals(payload)) fail(`payload of qos ${qos} differs (${m.payload.length} bytes)`);
    if (m.packet.qos !== qos) fail(`qos ${m.packet.qos} instead of ${qos}`);
  }
  // Retained: a later subscriber gets it with the retain flag.
  await a.publishAsync(`${base}/retained`, 'kept', { qos: 1, retain: true });
  const b = await connect({ clientId: `ws-b-${unique}` }, caFile);
  const got = nextMessage(b);
  await b.subscribeAsync(`${base}/retained`, { qos: 1 });
  const m = await got;
  if (m.payload.toString() !== 'kept' || !m.packet.retain) fail('retained message not delivered');
  await a.publishAsync(`${base}/retained`, '', { qos: 1, retain: true });
  await a.endAsync();
  await b.endAsync();
}

async function sub(topic, n, caFile) {
  const c = await connect({ clientId: `ws-sub-${unique}` }, caFile);
  await c.subscribeAsync(topic, { qos: 1 });
  console.log('READY');
  let left = Number(n);
  await new Promise((resolve) => {
    c.on('message', (t, payload, packet) => {
      console.log(JSON.stringify({ topic: t, payload: payload.toString(), qos: packet.qos }));
      if (--left === 0) resolve();
    });
  });
  await c.endAsync();
}

async function pub(topic, payload, qos, caFile) {
  const c = await connect({ clientId: `ws-pub-${unique}` }, caFile);
  await c.publishAsync(topic, payload, { qos: Number(qos) });
  await c.endAsync();
}

async function will(topic, caFile) {
  const c = await connect(
    { clientId: `ws-will-${unique}`, will: { topic, payload: Buffer.from('gone'), qos: 1 } },
    caFile,
  );
  console.log('READY');
  // Wait for the test to say go (a line on stdin), then vanish without DISCONNECT.
  await new Promise((resolve) => process.stdin.once('data', resolve));
  c.stream.destroy();
  process.exit(0);
}

try {
  switch (cmd) {
    case 'roundtrip': await roundtrip(rest[0]); break;
    case 'sub': await sub(rest[0], rest[1], rest[2]); break;
    case 'pub': await pub(rest[0], rest[1], rest[2], rest[3]); break;
    case 'will': await will(rest[0], rest[1]); break;
    default: fail(`unknown command ${cmd}`);
  }
  console.log('OK');
  process.exit(0);
} catch (e) {
  fail(e && e.stack ? e.stack : String(e));
}
