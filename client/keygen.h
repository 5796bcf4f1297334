/* keygen.h — `infemeral keygen --out DIR`: make the worker's static X25519
 * key pair (common/crypto.h).
 *
 * Writes DIR/worker.key (the private key, base64, mode 0600; never
 * overwritten) and DIR/worker.pub (the public key, base64, 0644), creating
 * DIR (mode 0700) if it does not exist. Prints to stdout, one per line:
 *   public key: <base64>
 *   fingerprint: <32 hex>
 * so an operator can give the public key to clients (who pin it with
 * --worker-pub) and compare fingerprints by eye. The private key is never
 * printed. Deploy it as INFEMERAL_WORKER_KEY (the file's text) or point
 * INFEMERAL_WORKER_KEY_FILE at the file.
 */
#ifndef INF_KEYGEN_H
#define INF_KEYGEN_H

/* argv holds the arguments after "keygen" (argv[0] is the first option),
 * as for the other subcommands in main.c. Returns the process exit code:
 * 0 written, 1 failed (message on stderr), 2 usage error. */
int cmd_keygen(int argc, char **argv);

#endif
