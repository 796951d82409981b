// Package lfc is the core of LFC (local file cache) prewarm and offload, as Neon's
// compute_ctl does it (compute_tools/src/compute_prewarm.rs, http/routes/lfc.rs): the
// endpoint storage client (Client), the Postgres side (PG: the neon extension's
// get_local_cache_state, prewarm_local_cache and get_prewarm_info), the prewarm/offload
// state machine (Machine: pure, on an injected clock) with the counters behind
// compute_ctl_lfc_*_total, and Core, which runs a prewarm or an offload through them.
// It serves, it does not mutate a cluster: it never imports internal/apply or the
// pageserver client.
//
// States and JSON (in internal/lfc/lfcstate, which the state record and compute-api share)
// are Neon's LfcPrewarmState and LfcOffloadState (tagged by `status`),
// with what Neon added after the reference commit: a cancelled prewarm (CancelPrewarm,
// which also cancels the Postgres query), an offload skipped for an empty LFC state, and
// the timings of the completed states (state_download_time_ms, uncompress_time_ms,
// prewarm_time_ms; state_query_time_ms, compress_time_ms, state_upload_time_ms).
//
// Endpoint storage: GET and PUT of
// http://{endpoint_storage_addr}/{tenant_id}/{timeline_id}/{endpoint_id}/lfc_state with
// endpoint_storage_token as bearer token; the body is one zstd frame (default level).
// A 404 on download ends the prewarm skipped (a first start has no state), not failed;
// only a 200 counts as a successful upload. Error texts are Neon's ("<status> querying
// endpoint storage", "request to endpoint storage failed: <status>", "decoding LFC
// state: ...", "loading LFC state into postgres: ...").
//
// The rule that matters most: the periodic offload runs only while the prewarm state is
// completed, not_prewarmed or skipped; never while a prewarm runs, never after a failed
// (or cancelled) one, because the incomplete state it would upload is what the next start
// prewarms from. A manual offload is refused while a prewarm runs (ErrPrewarmInProgress,
// the API's 429 with that reason) and allowed after a failed one. A cancelled prewarm
// stays prewarming until its run has ended (its Postgres query cancelled), so a new
// prewarm never overlaps the old query, as in Neon. A prewarm may be taken while an
// offload runs (POST /lfc/prewarm does not wait for offloads); the offload then must not
// upload what it read, which may be the prewarm's incomplete state: Core checks, after
// reading the LFC state and again right before the upload, whether a prewarm was taken
// since the offload started (Machine.PrewarmStartedDuring), and if so ends the offload
// failed with ErrPrewarmDuringOffload ("... a prewarm started during the offload ..."),
// uploading nothing. It counts in compute_ctl_lfc_offload_errors_total like any offload
// that did not store a state; the next offload (a periodic one once the prewarm has
// completed) uploads.
//
// Core's run functions must be called exactly once each: until one returns, its
// prewarm or offload is running. A panic inside one records the operation failed
// ("panic: ...") before it goes on, so it does not wedge the machine.
//
// Where this package differs from the reference, on purpose:
//   - A manual offload while a prewarm is in progress is refused (Neon's POST
//     /lfc/offload does not look at the prewarm state), for the rule above.
//   - An offload overtaken by a prewarm (one taken while the offload ran) ends failed
//     with ErrPrewarmDuringOffload and uploads nothing; Neon's uploads what it read.
//   - A non-NULL but zero-byte LFC state is not uploaded either (the offload ends
//     skipped); Neon skips only a NULL state and uploads an empty one.
//   - CancelPrewarm with no prewarm running does nothing. Neon cancels a token that stays
//     cancelled, so its next prewarm would end cancelled at once.
//   - A prewarm or offload that was running when the process restarted
//     (MachineOptions.Restore) is recorded failed with Interrupted; Neon's state dies
//     with compute_ctl. So no periodic offload follows a prewarm cut short. Restoring
//     is a change: Seq grows and OnChange announces the new snapshot.
//   - A prewarm that was cancelled but whose query had already completed ends completed
//     (what happened), not cancelled: its final count (neon.get_prewarm_info()) is read
//     on a context the cancel does not end, bounded by InfoTimeout.
//   - Any other cancelled prewarm ends cancelled, also one whose download was answered
//     with a 404 (Neon records skipped when the 404 arrived before the cancel was seen).
//   - An empty body in a 200 answer to the download ends the prewarm failed ("decoding
//     LFC state: empty body"); Neon passes it on.
//   - The timings: state_download_time_ms covers the whole download (headers and body)
//     and uncompress_time_ms only the decoding; Neon's download time ends at the
//     response headers, and its uncompress time covers reading the body and decoding it.
//   - compute_ctl_lfc_prewarms_total counts prewarms taken, as Neon's main branch; at the
//     reference commit it also counted refused requests.
//   - GET /lfc/prewarm (compute-api, from the state record compute-monitor writes) carries
//     the final count of a completed prewarm, as Neon's main branch, and the progress
//     from neon.get_prewarm_info() of a running one, published at most once a second (the
//     reference commit reads it live at each GET); a failed or cancelled prewarm keeps the
//     progress it reached, other states show zeros. total, prewarmed and skipped are
//     always present, as Neon's OpenAPI document requires.
//   - The neon extension is looked for first; without it a call fails with "neon
//     extension not installed" rather than a missing-function error.
//   - Requests are bounded (ClientOptions.Timeout), bodies and decompressed states are
//     bounded (MaxBytes), redirects are not followed (they could carry the token away),
//     and the token never appears in an error or a log line. An endpoint id (this
//     compute's, or from_endpoint) must be letters, digits, '-' and '_' ("invalid
//     endpoint id" otherwise); Neon puts any from_endpoint into the URL, ".." included.
//   - The periodic offload's first tick is one interval after NewMachine, as Neon's; a
//     tick missed while the caller was busy is not made up (Neon's tokio interval would
//     fire the missed ticks in a burst).
package lfc
