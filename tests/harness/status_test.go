package harness

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/internal/wire"
)

// TestStatusMirrorsWire: the harness reads `mcpgate status --json` into its
// own Status type (tests should see the JSON a user sees, not the
// supervisor's structs). This test keeps the two from drifting: a status
// with every field of wire.Status set decodes into harness.Status with no
// unknown field, and encodes back to the same JSON.
func TestStatusMirrorsWire(t *testing.T) {
	var st wire.Status
	fillAll(t, reflect.ValueOf(&st).Elem(), "Status")
	in, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	var mirror Status
	if err := dec.Decode(&mirror); err != nil {
		t.Fatalf("harness.Status lacks a field of the supervisor's status: %v\nJSON: %s", err, in)
	}
	out, err := json.Marshal(mirror)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	json.Unmarshal(in, &a)
	json.Unmarshal(out, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("harness.Status does not round-trip the supervisor's status:\nsupervisor: %s\nharness:    %s", in, out)
	}
}

// fillAll sets every field reachable from v to a non-zero value, so a field
// added to wire.Status later is covered without editing this test.
func fillAll(t *testing.T, v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(path)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(len(path)))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(len(path)))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAll(t, v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fillAll(t, v.Index(0), path+"[0]")
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 12, 1, 10, 0, len(path), 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillAll(t, v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		}
	default:
		t.Fatalf("%s: cannot fill a %s; teach fillAll", path, v.Kind())
	}
}
