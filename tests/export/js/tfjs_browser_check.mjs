// tfjs_browser_check.mjs: open a tfjs bundle's index.html in headless chromium, draw four examples
// with the mouse, label each with a class the model does not predict for it, fine-tune in the page
// and report the accuracy on those examples before and after.
//
// Usage: node tfjs_browser_check.mjs URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT
// Prints {"predicted", "labels", "before", "after", "losses", "errors"} as JSON on stdout.
import { openPage } from '../../js/chromium.mjs';

const { args, page, errors, close } = await openPage('tfjs_browser_check.mjs', { width: 900, height: 600 });
const { url, screenshot } = args;
// Strokes in the canvas's unit square: a bar, a slash, a box and a cross.
const strokes = [
  [[[0.5, 0.1], [0.5, 0.9]]],
  [[[0.2, 0.9], [0.8, 0.1]]],
  [[[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8], [0.2, 0.2]]],
  [[[0.2, 0.2], [0.8, 0.8]], [[0.8, 0.2], [0.2, 0.8]]],
];
try {
  await page.goto(url, { waitUntil: 'load' });
  await page.evaluate(() => window.emberTfjsReady);
  const box = await page.locator('#draw').boundingBox();
  const result = { predicted: [], labels: [] };
  for (const shape of strokes) {
    await page.click('#clear');
    for (const line of shape) {
      const at = ([x, y]) => [box.x + box.width * x, box.y + box.height * y];
      await page.mouse.move(...at(line[0]));
      await page.mouse.down();
      for (let i = 1; i < line.length; i++) {
        const [a, b] = [line[i - 1], line[i]];
        for (let s = 1; s <= 8; s++) {
          await page.mouse.move(...at([a[0] + ((b[0] - a[0]) * s) / 8, a[1] + ((b[1] - a[1]) * s) / 8]));
        }
      }
      await page.mouse.up();
    }
    const predicted = await page.evaluate(() => window.emberTfjs.predictDrawing());
    const label = (predicted + 1) % 10; // a label the model does not give this drawing yet
    await page.selectOption('#label', String(label));
    await page.click('#add');
    result.predicted.push(predicted);
    result.labels.push(label);
  }
  result.before = await page.evaluate(() => window.emberTfjs.accuracy());
  const trained = await page.evaluate(() => window.emberTfjs.fineTune(40, 0.01));
  result.after = trained.accuracy;
  result.losses = trained.losses;
  result.shown = await page.textContent('#accuracy');
  await page.screenshot({ path: screenshot });
  result.errors = errors;
  process.stdout.write(JSON.stringify(result));
} finally {
  await close();
}
