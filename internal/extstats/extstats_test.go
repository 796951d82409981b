package extstats

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

func TestTallyCountsDatabasesPerVersionAndOwner(t *testing.T) {
	var tl Tally
	tl.AddDatabase([]Installed{{"plpgsql", "1.0", 10}, {"pg_trgm", "1.6", 10}, {"hstore", "1.8", 16384}})
	tl.AddDatabase([]Installed{{"plpgsql", "1.0", 10}, {"pg_trgm", "1.5", 10}, {"hstore", "1.8", 16390}})
	tl.AddDatabase([]Installed{{"plpgsql", "1.0", 10}, {"pg_trgm", "1.6", 16384}})
	tl.AddDatabase(nil) // a database without extensions still counts as read
	tl.SkipDatabase()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	got := tl.Stats(at)
	want := Stats{
		Extensions: []Extension{
			{"hstore", "1.8", 2, NotSuperuser}, // two different non-bootstrap owners: one series
			{"pg_trgm", "1.5", 1, Superuser},
			{"pg_trgm", "1.6", 1, NotSuperuser},
			{"pg_trgm", "1.6", 1, Superuser},
			{"plpgsql", "1.0", 3, Superuser},
		},
		CollectedAt:      at,
		Databases:        4,
		SkippedDatabases: 1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stats\n%+v\nwant\n%+v", got, want)
	}
	if r, s := tl.Databases(); r != 4 || s != 1 {
		t.Errorf("Databases() = %d, %d", r, s)
	}
}

func TestStatsJSONIsStable(t *testing.T) {
	// Map iteration order varies: the same databases added in any order give the same
	// bytes.
	dbs := [][]Installed{
		{{"b", "2", 10}, {"a", "1", 10}, {"c", "1", 20}},
		{{"a", "1", 20}, {"b", "1", 10}},
		{{"a", "1", 10}},
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var first string
	for i := range 20 {
		var tl Tally
		for k := range dbs {
			tl.AddDatabase(dbs[(k+i)%len(dbs)])
		}
		b, err := json.Marshal(tl.Stats(at))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = string(b)
			continue
		}
		if string(b) != first {
			t.Fatalf("run %d: %s\nfirst: %s", i, b, first)
		}
	}
	want := `{"extensions":[{"extname":"a","version":"1","n_databases":1,"owned_by_superuser":"0"},` +
		`{"extname":"a","version":"1","n_databases":2,"owned_by_superuser":"1"},` +
		`{"extname":"b","version":"1","n_databases":1,"owned_by_superuser":"1"},` +
		`{"extname":"b","version":"2","n_databases":1,"owned_by_superuser":"1"},` +
		`{"extname":"c","version":"1","n_databases":1,"owned_by_superuser":"0"}],` +
		`"collected_at":"2025-01-02T03:04:05Z","databases":3}`
	if first != want {
		t.Errorf("json\n%s\nwant\n%s", first, want)
	}
	var back Stats
	if err := json.Unmarshal([]byte(first), &back); err != nil {
		t.Fatal(err)
	}
	var tl Tally
	for _, d := range dbs {
		tl.AddDatabase(d)
	}
	if !reflect.DeepEqual(back, tl.Stats(at)) {
		t.Errorf("round trip: %+v", back)
	}
}

func TestEmptyStatsHaveAnEmptyList(t *testing.T) {
	var tl Tally
	b, err := json.Marshal(tl.Stats(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"extensions":[],"collected_at":"2025-01-01T00:00:00Z","databases":0}`; string(b) != want {
		t.Errorf("%s, want %s", b, want)
	}
}

func TestLogMessageIsTheReferenceShape(t *testing.T) {
	s := Stats{
		Extensions:       []Extension{{"pg_trgm", "1.6", 2, Superuser}},
		CollectedAt:      time.Now(),
		Databases:        3,
		SkippedDatabases: 1,
	}
	want := `[NEON_EXT_STAT] {"extensions":[{"extname":"pg_trgm","version":"1.6","n_databases":2,"owned_by_superuser":"1"}]}`
	if got := LogMessage(s); got != want {
		t.Errorf("%s\nwant\n%s", got, want)
	}
	if got, want := LogMessage(Stats{}), `[NEON_EXT_STAT] {"extensions":[]}`; got != want {
		t.Errorf("%s, want %s", got, want)
	}
}

func TestInterval(t *testing.T) {
	for _, tc := range []struct {
		suspend int64
		cli     time.Duration
		want    time.Duration
	}{
		{-1, time.Hour, time.Hour},                 // never suspends: the default
		{0, time.Hour, time.Hour},                  // default
		{-1, 0, DefaultInterval},                   // no command line value
		{0, 90 * time.Second, 90 * time.Second},    // the command line's default is kept (the reference stores 3600)
		{-7, 90 * time.Second, 90 * time.Second},   // other negatives: the default too (the reference wraps them)
		{300, time.Hour, 300 * time.Second},        // the suspend timeout
		{300, 90 * time.Second, 300 * time.Second}, // whatever the default
		{math.MaxInt64, time.Hour, maxBase},        // capped: 2x still fits
		{-1, time.Duration(math.MaxInt64), maxBase},
	} {
		if got := Interval(tc.suspend, tc.cli); got != tc.want {
			t.Errorf("Interval(%d, %v) = %v, want %v", tc.suspend, tc.cli, got, tc.want)
		}
		if got := Interval(tc.suspend, tc.cli); 2*got < got {
			t.Errorf("Interval(%d, %v): twice %v overflows", tc.suspend, tc.cli, got)
		}
	}
}
