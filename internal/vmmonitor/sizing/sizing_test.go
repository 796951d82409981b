package sizing

import (
	"strings"
	"testing"
)

const GiB = 1 << 30

// The figures below are worked out by hand from the formulas in the package comment;
// the comments show the arithmetic.

func TestUsable(t *testing.T) {
	c := Default()
	for _, tt := range []struct {
		mem, want uint64
	}{
		{4 * GiB, 4190109696},      // 4096 MiB - 100 MiB = 3996 MiB = 3996 * 1048576
		{2 * GiB, 2042626048},      // 2048 - 100 = 1948 MiB
		{100 * MiB, 0},             // exactly the sys buffer
		{50 * MiB, 0},              // less than the buffer: 0, not a wrap-around
		{100*MiB + 1, 1},           // one byte above
		{0, 0},                     // nothing granted
		{1 << 62, 1<<62 - 100*MiB}, // large values stay exact (integer arithmetic)
	} {
		if got := c.Usable(tt.mem); got != tt.want {
			t.Errorf("Usable(%d) = %d, want %d", tt.mem, got, tt.want)
		}
	}
}

func TestThreshold(t *testing.T) {
	c := Default()
	for _, tt := range []struct {
		name         string
		total, want  uint64
		wantMiBInMsg string
	}{
		// 1073741824 * 0.85 = 912680550.4 -> 912680550; / 1048576 = 870.4 MiB
		{"1 GiB MemTotal at start", GiB, 912680550, "870.4"},
		// 4294967296 * 0.85 = 3650722201.6 -> 3650722201 = 3481.6 MiB
		{"4 GiB MemTotal", 4 * GiB, 3650722201, "3481.6"},
		// usable of a 4 GiB grant: 4190109696 * 0.85 = 3561593241.6 -> 3561593241
		// (3996 MiB * 0.85 = 3396.6 MiB)
		{"usable of 4 GiB", 4*GiB - 100*MiB, 3561593241, "3396.6"},
		// usable of a 2 GiB target: 2042626048 * 0.85 = 1736232140.8 -> 1736232140
		// (1948 MiB * 0.85 = 1655.8 MiB)
		{"usable of 2 GiB", 2*GiB - 100*MiB, 1736232140, "1655.8"},
		// usable of 1 GiB: 968884224 * 0.85 = 823551590.4 -> 823551590 (924 * 0.85 = 785.4)
		{"usable of 1 GiB", GiB - 100*MiB, 823551590, "785.4"},
		// 100 * 0.85 = 85 exactly: the float product (0.85 is not exact in binary) still
		// rounds to 85.0 and truncates to 85.
		{"tiny", 100, 85, "0.00008106232"},
		{"zero", 0, 0, "0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := c.Threshold(tt.total)
			if got != tt.want {
				t.Fatalf("Threshold(%d) = %d, want %d", tt.total, got, tt.want)
			}
			if s := MiBString(got); s != tt.wantMiBInMsg {
				t.Errorf("MiBString(%d) = %q, want %q", got, s, tt.wantMiBInMsg)
			}
		})
	}
}

func TestThresholdTooLow(t *testing.T) {
	c := Default()
	const thr = 1736232140 // the threshold of a 2 GiB target (1655.8 MiB)
	for _, tt := range []struct {
		avg  uint64
		want bool
	}{
		{1600 * MiB, true},        // 1600 + 100 = 1700 MiB = 1782579200 > 1736232140
		{1500 * MiB, false},       // 1600 MiB = 1677721600 <= 1736232140
		{thr - 100*MiB, false},    // 1631374540 + 104857600 = thr: exactly the buffer left
		{thr - 100*MiB + 1, true}, // one byte less than the buffer left
		{thr, true},               // usage at the threshold itself
		{0, false},                // idle
	} {
		if got := c.ThresholdTooLow(thr, tt.avg); got != tt.want {
			t.Errorf("ThresholdTooLow(%d, %d) = %v, want %v", uint64(thr), tt.avg, got, tt.want)
		}
	}
}

func TestFileCacheSize(t *testing.T) {
	f := DefaultFileCache()
	for _, tt := range []struct {
		name        string
		total, want uint64
	}{
		// total <= 256 MiB leaves nothing for the cache.
		{"below the minimum remaining", 200 * MiB, 0},
		{"exactly the minimum remaining", 256 * MiB, 0},
		// 1 byte available: 1 / 1.1 = 0.9 -> 0; rounded to MiB: 0.
		{"one byte above", 256*MiB + 1, 0},
		// available = 300 - 256 = 44 MiB = 46137344; 46137344 / 1.1 = 41943040 (40 MiB:
		// the float quotient lands within half a unit of the integer and rounds to it);
		// 0.75 * 300 MiB = 225 MiB; min = 40 MiB.
		{"300 MiB: the spread line", 300 * MiB, 40 * MiB},
		// available = 1024 - 256 = 768 MiB = 805306368; / 1.1 = 732096698.18 -> 732096698
		// = 698.18 MiB; 0.75 * 1024 MiB = 768 MiB; min = 698.18 MiB -> 698 MiB = 731906048.
		{"1 GiB", GiB, 698 * MiB},
		// The lines cross at total = 256 MiB / (1 - 0.75 * 1.1) = 1462.86 MiB.
		// 1462 MiB: (1462 - 256) / 1.1 = 1096.36 MiB < 0.75 * 1462 = 1096.5 MiB -> 1096 MiB.
		{"just below the crossing", 1462 * MiB, 1096 * MiB},
		// 1463 MiB: (1463 - 256) / 1.1 = 1097.27 MiB > 0.75 * 1463 = 1097.25 MiB -> 1097 MiB.
		{"just above the crossing", 1463 * MiB, 1097 * MiB},
		// 2048 MiB: (2048 - 256) / 1.1 = 1629.1 MiB; 0.75 * 2048 = 1536 MiB -> 1536 MiB.
		{"2 GiB", 2 * GiB, 1536 * MiB},
		// 4096 MiB: 0.75 * 4096 = 3072 MiB (spread line: 3490.9 MiB).
		{"4 GiB", 4 * GiB, 3072 * MiB},
		// The usable memory of a 2 GiB target, 1948 MiB: 0.75 * 1948 = 1461 MiB
		// (spread: (1948 - 256) / 1.1 = 1538.2 MiB).
		{"usable of 2 GiB", 2*GiB - 100*MiB, 1461 * MiB},
		// 3996 MiB: 0.75 * 3996 = 2997 MiB.
		{"usable of 4 GiB", 4*GiB - 100*MiB, 2997 * MiB},
		// 924 MiB: (924 - 256) / 1.1 = 607.27 MiB < 693 MiB -> 607 MiB.
		{"usable of 1 GiB", GiB - 100*MiB, 607 * MiB},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := f.Size(tt.total)
			if got != tt.want {
				t.Fatalf("Size(%d) = %d (%s MiB), want %d (%s MiB)", tt.total, got, MiBString(got), tt.want, MiBString(tt.want))
			}
			if got%MiB != 0 {
				t.Errorf("Size(%d) = %d is not a whole number of MiB", tt.total, got)
			}
		})
	}
}

func TestCapMiB(t *testing.T) {
	for _, tt := range []struct {
		size, max  uint64
		wantMiB    uint64
		wantCapped bool
	}{
		{1461 * MiB, 4 * GiB, 1461, false},   // below the cap
		{1461 * MiB, 1024 * MiB, 1024, true}, // capped by neon.max_file_cache_size = 1GB
		{1461 * MiB, 1461 * MiB, 1461, false},
		{1461 * MiB, 0, 0, true},                   // max 0 (the neon default): no cache
		{1461 * MiB, 1000*MiB + 12345, 1000, true}, // the cap rounds down to a MiB
		{0, 4 * GiB, 0, false},
	} {
		gotMiB, gotCapped := CapMiB(tt.size, tt.max)
		if gotMiB != tt.wantMiB || gotCapped != tt.wantCapped {
			t.Errorf("CapMiB(%d, %d) = %d, %v; want %d, %v", tt.size, tt.max, gotMiB, gotCapped, tt.wantMiB, tt.wantCapped)
		}
	}
}

func TestMiBString(t *testing.T) {
	for _, tt := range []struct {
		bytes uint64
		want  string
	}{
		{0, "0"},
		{100 * MiB, "100"},
		{1600 * MiB, "1600"},
		// float32(912680550) = 912680576 (float32 has 24 bits of mantissa: steps of 64
		// here); / 2^20 = 870.40002...; the shortest text for that float32 is 870.4.
		{912680550, "870.4"},
		{1, "0.0000009536743"},        // 2^-20 printed without an exponent, as Rust does
		{3 << 40, "3145728"},          // 3 TiB
		{1736232140, "1655.8"},        // the threshold of a 2 GiB target
		{1<<64 - 1, "17592186000000"}, // float32(2^64) / 2^20 = 2^44, shortest digits
	} {
		if got := MiBString(tt.bytes); got != tt.want {
			t.Errorf("MiBString(%d) = %q, want %q", tt.bytes, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	if err := DefaultFileCache().Validate(); err != nil {
		t.Errorf("DefaultFileCache().Validate() = %v", err)
	}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"zero sys buffer", Config{MinOverheadFraction: 0.15}.Validate(), "sys_buffer_bytes cannot be 0"},
		{"fraction 1", Config{SysBufferBytes: 1, MinOverheadFraction: 1}.Validate(), "min overhead fraction"},
		{"negative fraction", Config{SysBufferBytes: 1, MinOverheadFraction: -0.1}.Validate(), "min overhead fraction"},
		{"multiplier 1", FileCache{ResourceMultiplier: 1, MinRemainingAfterCache: 1}.Validate(), "resource_multiplier"},
		{"multiplier 0", FileCache{MinRemainingAfterCache: 1}.Validate(), "resource_multiplier"},
		{"negative spread", FileCache{ResourceMultiplier: 0.5, MinRemainingAfterCache: 1, SpreadFactor: -1}.Validate(), "spread_factor"},
		{"no minimum", FileCache{ResourceMultiplier: 0.5}.Validate(), "min_remaining_after_cache"},
		// 0.75 * (1 + 1) = 1.5 >= 1: the spread line never reaches the 75% line.
		{"lines never meet", FileCache{ResourceMultiplier: 0.75, MinRemainingAfterCache: 1, SpreadFactor: 1}.Validate(), "incompatible"},
	} {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v, want an error with %q", tt.name, tt.err, tt.want)
		}
	}
}
