// browser_check.mjs: open an ember web bundle's index.html in headless chromium, predict the stored
// sample inside the page, pick sample 0 in the UI, draw a stroke, and save a screenshot.
//
// Usage: node browser_check.mjs URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT
//   NPM_DIR: a folder whose node_modules holds playwright-core (never downloads a browser).
// Prints {"dims", "outputs", "labels", "bad_input_error", "shown", "drawn", "errors"} as JSON on stdout.
import { openPage } from '../../js/chromium.mjs';

const { args, page, errors, close } = await openPage('browser_check.mjs', { width: 900, height: 480 });
const { url, screenshot } = args;
try {
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
  await close();
}
