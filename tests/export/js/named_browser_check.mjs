// named_browser_check.mjs: open the web bundle of a model with several named inputs (int64 token
// ids + mask) in headless chromium, run every stored sample through ember.js's model.run inside
// the page, pick sample 0 in the UI, and save a screenshot.
//
// Usage: node named_browser_check.mjs URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT
// Prints {"runs": {kind: {output: {dims, data}}}, "shown", "missing_input_error", "errors"} as
// JSON on stdout; kind is "stored" or "varied" (the same rows at another sequence length).
import { openPage } from '../../js/chromium.mjs';

const { args, page, errors, close } = await openPage('named_browser_check.mjs', { width: 900, height: 420 });
try {
  await page.goto(args.url, { waitUntil: 'load' });
  const result = await page.evaluate(async () => {
    const { model, samples } = await window.emberReady;
    const runs = {};
    for (const [kind, key] of [['stored', 'inputs'], ['varied', 'varied_inputs']]) {
      if (!samples[key]) continue;
      const feeds = {};
      for (const [name, t] of Object.entries(samples[key])) feeds[name] = { data: t.data, dims: t.dims };
      const out = await model.run(feeds);
      runs[kind] = {};
      for (const [name, t] of Object.entries(out)) runs[kind][name] = { dims: t.dims, data: Array.from(t.data) };
    }
    let missing = null;
    try {
      await model.run({ input_ids: { data: [1, 2], dims: [1, 2] } });
    } catch (err) {
      missing = err.message;
    }
    return { runs, missing_input_error: missing };
  });
  // Pick sample 0 as a person would: the page runs that row and shows its first output.
  await page.selectOption('#samples', '0');
  await page.waitForFunction(() => document.getElementById('prediction').textContent !== '-');
  result.shown = await page.textContent('#prediction');
  result.errors = errors;
  await page.screenshot({ path: args.screenshot, fullPage: true });
  process.stdout.write(JSON.stringify(result));
} finally {
  await close();
}
