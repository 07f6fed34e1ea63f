// A stand-in for a KMS behind `fwcast sign --signer-command`: signs its stdin
// with the Ed25519 key in the PEM file named by its argument, and writes the
// 64-byte signature on stdout. As in a real deployment, fwcast never reads the key.
import { createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

const key = createPrivateKey(readFileSync(process.argv[2]));
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
process.stdout.write(sign(null, Buffer.concat(chunks), key));
