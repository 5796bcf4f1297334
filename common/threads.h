/* threads.h — how the programs' OpenMP threads wait.
 *
 * libgomp's threads spin for ~300000 iterations at every barrier before they
 * sleep. That is right for a machine of one's own and very wrong when two
 * OpenMP programs share the cores — the usual development setup, where
 * `infemeral` and `infemeral-worker` run side by side: a spinning thread
 * burns the slice its partner in the other process needs (measured on 2
 * cores, SmolLM2 through a local worker: 35.7 tok/s by default, 52.7 with a
 * spin count of 10000, and a lone run is unchanged at ~72). libgomp reads
 * its settings from the environment when it is loaded, before main, so the
 * only way to change the default is to set it and start the program again.
 */
#ifndef INF_THREADS_H
#define INF_THREADS_H

/* Call first in main. When neither GOMP_SPINCOUNT nor OMP_WAIT_POLICY is
 * set, sets GOMP_SPINCOUNT=10000 and re-executes the program with the same
 * arguments (on failure it simply goes on). A user's own setting wins. */
void inf_threads_init(char **argv);

#endif
