package serial

import (
	"errors"
	"testing"
)

func TestPortConfigValidate(t *testing.T) {
	good := PortConfig{Path: "/dev/ttyUSB0", Baud: 9600, DataBits: 8, Parity: "none"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bad   PortConfig
		field Field
	}{
		{PortConfig{Baud: 9600, DataBits: 8}, FieldPath},
		{PortConfig{Path: "/x", Baud: 9601, DataBits: 8}, FieldBaud},
		{PortConfig{Path: "/x", Baud: 9600, DataBits: 6}, FieldDataBits},
		{PortConfig{Path: "/x", Baud: 9600, DataBits: 8, Parity: "mark"}, FieldParity},
	} {
		err := tc.bad.Validate()
		if err == nil {
			t.Errorf("%+v accepted", tc.bad)
			continue
		}
		// The setting is named by type, so callers never parse the text.
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v names %+v, want field %s", tc.bad, err, fe, tc.field)
		}
	}
}
