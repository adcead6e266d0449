// MQTT.js's browser bundle in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) over ws://: subscribe, publish QoS 1, receive it. Driven by
// tests/ops_websocket.rs.
//
//   node browser.mjs URL
//
// Prints OK on success; any failure exits non-zero with a message on stderr.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const bundle = fs.readFileSync(
  path.join(path.dirname(new URL(import.meta.url).pathname), 'node_modules/mqtt/dist/mqtt.min.js'),
  'utf8',
);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ringmq-chromium-'));
let context;
const timer = setTimeout(() => {
  console.error('FAIL: timeout');
  process.exit(1);
}, 25000);
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // about:blank is not a local origin: Chrome's Local Network Access checks would block
      // its WebSocket to 127.0.0.1.
      '--disable-features=LocalNetworkAccessChecks',
    ],
  });
  const page = await context.newPage();
  page.on('console', (m) => console.error(`page: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto('about:blank');
  await page.addScriptTag({ content: bundle });
  const result = await page.evaluate(
    (brokerUrl) =>
      new Promise((resolve) => {
        const c = window.mqtt.connect(brokerUrl, { protocolVersion: 5, reconnectPeriod: 0 });
        c.on('error', (e) => resolve(`error: ${e.message}`));
        c.on('close', () => resolve('closed before the message arrived'));
        c.on('connect', () => {
          c.subscribe('browser/echo', { qos: 1 }, (err) => {
            if (err) return resolve(`subscribe: ${err.message}`);
            c.publish('browser/echo', 'from chromium', { qos: 1 });
          });
        });
        c.on('message', (topic, payload) => {
          c.end();
          resolve(`${topic}=${payload.toString()}`);
        });
      }),
    url,
  );
  if (result !== 'browser/echo=from chromium') throw new Error(result);
  console.log('OK');
} catch (e) {
  console.error(`FAIL: ${e && e.stack ? e.stack : e}`);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  if (context) await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
