// Package monitor is the core of compute-monitor's activity monitor: it decides, every
// round, when the compute was last active (the last_active of GET /status that a control
// plane suspends an idle compute on), and how long Postgres could not be checked (the
// downtime metrics). It follows Neon's compute_tools/src/monitor.rs (reference commit
// 53a05e8ccb).
//
// The pieces, each usable alone:
//
//   - Sampler decides one sample from a Source (PGSource runs the reference's queries on
//     a pgx connection): the pg_stat_database delta rule (only with the spec feature
//     activity_monitor_experimental), then the client backends, walsenders,
//     subscriptions and autovacuum workers, stopping at the first that shows activity.
//   - Tracker holds last_active (forward only) and says when a coalescing publisher
//     should write it into the state record: when it moved, at most once per second.
//   - Downtime computes compute_pg_current_downtime_ms and compute_pg_downtime_ms_total
//     from the outcome of each round.
//   - Loop runs the rounds on a Clock (every 500 ms by default), reconnects after a
//     failed round and calls OnRound(ok, sample) after each, so that a unit sends
//     WATCHDOG=1 only after a successful round.
//
// The package knows nothing of systemd, D-Bus or the state record; the caller wires
// them. The caller starts the loop once the compute is running, as the reference waits
// for Running (wait_for_postgres_start): the per-database connections of a start would
// otherwise count as activity through the stats rule. It imports neither internal/apply nor the pageserver client (internal/archtest).
//
// # Which sessions are seen
//
// A sample sees the sessions that exist when it runs. Between two samples (500 ms):
//
//   - A session of a user other than the admin role that is still connected at the next
//     sample is seen: running a statement or idle in a transaction (any state but idle)
//     means "active now"; idle, its state_change (when its last statement ended) is the
//     activity time, even when the statement ran wholly between the samples.
//   - A session that connects, works and disconnects wholly between two samples is not
//     seen by the backends rule. With activity_monitor_experimental it is seen at the
//     next sample through pg_stat_database (sessions, active_time), as "active now",
//     except in the databases postgres, template0 and template1, which the reference
//     leaves out; without the feature it is missed.
//   - A session that disconnects after a sample saw it leaves the activity time of that
//     sample (its state_change then), not the time it disconnected.
//   - The admin role's sessions never count through the backends rule; through the stats
//     rule they do (the counters do not know roles), which is why the reference runs its
//     per-database extension statistics rarely.
//
// # Where this differs from the reference, on purpose
//
//   - Time zone: the reference formats state_change with to_char in the monitor session's
//     time zone and labels the text "Z", so with a TimeZone other than UTC the idle
//     activity time is off by the zone's offset. We read state_change as a timestamptz,
//     an absolute time whatever the session's TimeZone (pgx decodes it), in UTC.
//   - The admin role is a parameter (the reference hard-codes cloud_admin).
//   - Rules 1 and 3-5 give "now" and never move the value back, even on a clock that
//     stepped back (the reference assigns now).
//   - Downtime: the reference reports a failure before it reconnects and restarts its
//     total from after the reconnect attempt, so the time a reconnect takes is not in
//     compute_pg_downtime_ms_total; our round is connect plus queries and its whole time
//     counts. The total adds durations and truncates to milliseconds when read (the
//     reference truncates each increment).
//   - A round is bounded by RoundTimeout (5 s): a hung Postgres makes rounds fail and
//     shows as downtime (the reference's queries have no timeout and its thread hangs).
//   - Logs: the first failed round is a warning and the recovery an info line with the
//     outage's downtime_ms; the failed rounds between are debug (the reference logs every
//     failed round, twice a second while Postgres is down).
//   - Publication: the reference keeps last_active in memory; ours goes to a state record
//     that is fsynced, so Tracker coalesces (at most one write per second); /status lags
//     the monitor by at most a second plus a round. A Tracker is seeded from the record,
//     so a restarted monitor never moves last_active back.
//   - Rounds run at a fixed rate (a ticker; the ticks during a long round coalesce into
//     one), where the reference sleeps a fixed delay after each round: the same while
//     rounds are much shorter than the interval.
package monitor
