// report_check.mjs: open a report.html (a file: URL, offline) in headless chromium, check that every
// chart was drawn, hover over the first chart and read the tooltip, drag to zoom, move the
// smoothing slider, and save a screenshot.
//
// Usage: node report_check.mjs URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT
//   NPM_DIR: a folder whose node_modules holds playwright-core (never downloads a browser).
// Prints {"charts", "drawn", "paths", "tip", "zoomed", "smoothed", "clipped", "requests", "errors"}
// as JSON on stdout.
import { openPage } from '../../js/chromium.mjs';

const { args, page, errors, close } = await openPage('report_check.mjs', { width: 1200, height: 900 });
const { url, screenshot } = args;
const requests = [];
try {
  page.on('request', (req) => { if (!req.url().startsWith('file:')) requests.push(req.url()); });
  await page.goto(url, { waitUntil: 'load' });
  const result = await page.evaluate(() => {
    const figures = Array.from(document.querySelectorAll('figure.plot'));
    // A label is clipped when its box leaves the SVG's drawing area.
    let clipped = [];
    for (const svg of document.querySelectorAll('figure.plot svg')) {
      const box = svg.getBoundingClientRect();
      for (const text of svg.querySelectorAll('text')) {
        const b = text.getBoundingClientRect(); // after rotation: the box as drawn
        if (b.left < box.left - 0.5 || b.top < box.top - 0.5 || b.right > box.right + 0.5
            || b.bottom > box.bottom + 0.5) clipped.push(text.textContent);
      }
    }
    return {
      charts: (window.emberReport || {}).charts,
      drawn: figures.length,
      paths: figures.map((f) => f.querySelectorAll('g.series path').length),
      ids: figures.map((f) => f.id),
      clipped,
    };
  });
  // Hover in the middle of the first chart's plot area: the tooltip shows the values there.
  const first = page.locator('figure.plot svg').first();
  const box = await first.boundingBox();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.5);
  const tip = page.locator('figure.plot .tip').first();
  result.tip = (await tip.isVisible()) ? await tip.textContent() : null;
  // Drag across the middle of the first chart: the x axis zooms in, "reset zoom" appears.
  const ticksBefore = await first.locator('g.axes text').allTextContents();
  await page.mouse.move(box.x + box.width * 0.45, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.5, { steps: 5 });
  await page.mouse.up();
  const ticksAfter = await first.locator('g.axes text').allTextContents();
  result.zoomed = (await page.locator('figure.plot button.reset').first().isVisible())
    && ticksAfter.join() !== ticksBefore.join();
  // The per-step chart's smoothing slider redraws its smoothed line.
  const slider = page.locator('#chart-step_loss input[type=range]');
  result.smoothed = null;
  if (await slider.count()) {
    const before = await page.locator('#chart-step_loss path.smoothed').first().getAttribute('d');
    await slider.fill('0.95');
    const after = await page.locator('#chart-step_loss path.smoothed').first().getAttribute('d');
    result.smoothed = before !== after;
  }
  result.dom = await page.content();
  result.errors = errors;
  result.requests = requests;
  await page.screenshot({ path: screenshot, fullPage: true });
  process.stdout.write(JSON.stringify(result));
} finally {
  await close();
}
