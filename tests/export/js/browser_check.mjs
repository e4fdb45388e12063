// browser_check.mjs: open an ember web bundle's index.html in headless chromium, predict the stored
// sample inside the page, pick sample 0 in the UI, draw a stroke, and save a screenshot.
//
// Usage: node browser_check.mjs URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT
//   NPM_DIR: a folder whose node_modules holds playwright-core (never downloads a browser).
// Prints {"dims", "outputs", "labels", "bad_input_error", "shown", "drawn", "errors"} as JSON on stdout.
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const [url, npmDir, chromium, profile, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node browser_check.mjs URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT');
  process.exit(2);
}
const { chromium: launcher } = createRequire(join(resolve(npmDir), 'package.json'))('playwright-core');
const context = await launcher.launchPersistentContext(profile, {
  executablePath: chromium,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--no-first-run', '--disable-component-update', '--disable-sync', '--disable-quic',
  ],
  viewport: { width: 900, height: 480 },
  timeout: 60000,
});
const errors = [];
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  await page.goto(url, { waitUntil: 'load' });
  const result = await page.evaluate(async () => {
    const { model, samples } = await window.emberReady;
    const r = await model.predict(Float32Array.from(samples.inputs), samples.dims);
    return { dims: r.dims, outputs: Array.from(r.outputs), labels: r.labels };
  });
  result.bad_input_error = await page.evaluate(async () => {
    try {
      await window.ember.model.predict([1, 2, 3]);
      return null;
    } catch (err) {
      return err.message;
    }
  });
  // Show sample 0 in the UI, as a person picking it would, then keep a picture of the page.
  await page.selectOption('#samples', '0');
  await page.waitForFunction(() => document.getElementById('prediction').textContent !== '-');
  result.shown = await page.textContent('#prediction');
  // Draw a stroke (a "1") on the canvas: the page downsamples it to 8x8 and predicts.
  const box = await page.locator('#draw').boundingBox();
  await page.evaluate(() => { document.getElementById('prediction').textContent = '-'; });
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.15);
  await page.mouse.down();
  for (let i = 1; i <= 10; i++) {
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * (0.15 + 0.07 * i));
  }
  await page.mouse.up();
  await page.waitForFunction(() => document.getElementById('prediction').textContent !== '-');
  result.drawn = await page.textContent('#prediction');
  result.errors = errors;
  await page.screenshot({ path: screenshot, fullPage: true });
  process.stdout.write(JSON.stringify(result));
} finally {
  await context.close();
}
