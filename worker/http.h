/* http.h — the worker's HTTP front door (libmicrohttpd): RunPod's endpoint
 * API shape for the dev server and RunPod's load-balancer mode.
 *
 * Routes (all replies are JSON; every error is {"error": "..."}):
 *   POST /run                -> 200 {"id","status":"IN_QUEUE"}
 *   POST /runsync[?wait=ms]  -> waits up to wait ms (default 90000, max
 *                               300000): 200 {"id","status":"COMPLETED","output":...};
 *                               a failed job answers with the handler's
 *                               4xx/5xx status and {"id","status":"FAILED","error":"code: message"};
 *                               not finished yet: 200 {"id","status":"IN_QUEUE"|"IN_PROGRESS"}
 *   GET  /status/{id}        -> 200 {"id","status","output"?,"error"?}; 404 unknown id
 *   POST /cancel/{id}        -> 200 {"id","status":"CANCELLED"} (a finished job keeps its status)
 *   GET  /health             -> 200 {"jobs":{...},"workers":{...}}
 *   GET  /ping (ping_path)   -> 204 while loading, 200 {"status":"healthy"} when ready
 * Request bodies are {"input": <JSON>}; the job function receives the exact
 * text of the "input" value.
 * Errors: 400 malformed JSON / missing "input" / bad ?wait; 401 missing or
 * wrong bearer token (every route except the ping path, when api_key is
 * set); 404 unknown route or job; 405 wrong method (with Allow); 413 body
 * over max_body (refused from Content-Length before the body is read, or
 * as soon as a streamed body passes the limit); 503 queue full, shutting
 * down, or still loading (with Retry-After).
 *
 * Threads: one thread per connection (keep-alive on), at most
 * max_connections; a /runsync waits in its connection's thread.
 * Ownership: the server does not own the jobs table; stop the server
 * (http_stop) before destroying the table. The server copies the config's
 * strings (the API key is wiped when freed).
 * Thread-safety: http_port, http_set_jobs, http_set_ready and http_drain
 * may be called from any thread at any time; http_quiesce and http_stop
 * from one thread.
 */
#ifndef INF_HTTP_H
#define INF_HTTP_H

#include <stddef.h>

#include "jobs.h"
#include "status.h"

typedef struct {
    const char *host;          /* numeric IPv4/IPv6 address or host name; NULL = "127.0.0.1" */
    unsigned port;             /* 0 = a free port (see http_port) */
    const char *api_key;       /* bearer token; NULL or "" = no auth */
    size_t max_body;           /* request body bytes; 0 = INF_MAX_REQUEST_BYTES */
    unsigned max_connections;  /* 0 = 128 */
    unsigned conn_timeout_s;   /* idle connection timeout; 0 = 60 */
    unsigned runsync_wait_ms;  /* default ?wait; 0 = 90000 */
    unsigned runsync_max_wait_ms; /* cap on ?wait; 0 = 300000 */
    const char *ping_path;     /* NULL = "/ping" */
    int ping_only;             /* serve only ping_path (a separate health port) */
    int log;                   /* one line per request on stderr: method, path, status, ms */
} http_config;

typedef struct http_server http_server;

/* Binds and starts serving. Until http_set_jobs, job routes answer 503
 * and the ping path 204. */
inf_status http_start(const http_config *cfg, http_server **out, inf_error *err);

/* The bound TCP port (useful with port 0). */
unsigned http_port(const http_server *s);

/* Attaches the job table (not owned) and marks the server ready: the ping
 * path answers 200 from now on. NULL detaches it (loading again). */
void http_set_jobs(http_server *s, jobs_table *jobs);
/* Ready flag alone (for a ping-only health server). */
void http_set_ready(http_server *s, int ready);

/* Stops accepting new connections; open connections are still served. */
void http_quiesce(http_server *s);

/* Waits up to timeout_ms until no request is in progress (idle keep-alive
 * connections do not count), so that replies already being written reach
 * their clients before http_stop closes the sockets. Returns how many
 * requests were still in progress. */
unsigned http_drain(http_server *s, unsigned timeout_ms);

/* Closes every connection, joins the connection threads (a /runsync still
 * waiting keeps its thread until its wait ends: shut the jobs table down
 * first) and frees the server. NULL is a no-op. */
void http_stop(http_server *s);

#endif
