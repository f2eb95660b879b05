// Seals one value with @linode/kubeseal-encrypt (namespace-wide scope: the OAEP label is the namespace).
// stdin: {"publicKeyPem": "...", "namespace": "...", "value": "..."}; stdout: the base64 ciphertext.
import { encryptSecretItem } from '@linode/kubeseal-encrypt'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const { publicKeyPem, namespace, value } = JSON.parse(Buffer.concat(chunks).toString('utf8'))
process.stdout.write(await encryptSecretItem(publicKeyPem, namespace, value))
