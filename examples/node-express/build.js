// `npm run build`: writes the server to dist/, the only sources the production image ships.
// Uses a dev dependency, which the production image must not contain.
const fs = require('fs');
const isNumber = require('is-number');

const port = process.env.PORT || 4000;
if (!isNumber(port)) {
  throw new Error(`PORT must be a number, got ${port}`);
}
fs.mkdirSync('dist', { recursive: true });
const banner = `// built by build.js from index.js on node ${process.version}\n`;
fs.writeFileSync('dist/index.js', banner + fs.readFileSync('index.js', 'utf8'));
console.log('built dist/index.js');
