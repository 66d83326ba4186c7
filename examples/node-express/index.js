const express = require('express');

const app = express();
const port = process.env.PORT || 4000;

app.get('/', (req, res) => {
  res.send('Hello World');
});

const server = app.listen(port, () => {
  console.log(`listening on port ${port}`);
});

// Stop cleanly on `docker stop` / Ctrl-C: node as PID 1's child gets the signal relayed.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
