package repr

import (
	"slices"
	"testing"
	"time"
)

func TestRoundTrips(t *testing.T) {
	for _, tm := range []time.Time{{}, time.UnixMilli(1).UTC(), time.Date(2300, 1, 2, 3, 4, 5, 6e6, time.UTC)} {
		if got := FromMS(MS(tm)); !got.Equal(tm) {
			t.Errorf("FromMS(MS(%v)) = %v", tm, got)
		}
	}
	for _, l := range [][]string{nil, {"a"}, {"a", `"b"`, "ü"}} {
		got, err := ParseList(ListJSON(l))
		if err != nil || !slices.Equal(got, l) {
			t.Errorf("ParseList(ListJSON(%q)) = %q, %v", l, got, err)
		}
	}
	if HashID("x") != "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881" {
		t.Error("HashID is not the hex SHA-256 (stored hashes depend on it)")
	}
}
