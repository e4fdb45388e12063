// chromium.mjs: what the browser checks share: their command line, and headless Debian chromium
// driven by playwright-core (which never downloads a browser of its own).
//
//   const { page, errors, close } = await openPage('report_check.mjs', { width: 1200, height: 900 });
//   // argv: URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT; `errors` collects page errors and
//   // console errors; `args` holds the parsed argv.
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

export function parseArgs(script) {
  const [url, npmDir, chromium, profile, screenshot] = process.argv.slice(2);
  if (!screenshot) {
    console.error(`usage: node ${script} URL NPM_DIR CHROMIUM PROFILE_DIR SCREENSHOT`);
    process.exit(2);
  }
  return { url, npmDir, chromium, profile, screenshot };
}

export async function openPage(script, viewport) {
  const args = parseArgs(script);
  const { chromium: launcher } = createRequire(join(resolve(args.npmDir), 'package.json'))('playwright-core');
  const context = await launcher.launchPersistentContext(args.profile, {
    executablePath: args.chromium,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--no-first-run', '--disable-component-update', '--disable-sync', '--disable-quic',
    ],
    viewport,
    timeout: 60000,
  });
  const errors = [];
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  return { args, page, errors, close: () => context.close() };
}
