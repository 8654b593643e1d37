package serial

import "testing"

func TestPortConfigValidate(t *testing.T) {
	good := PortConfig{Path: "/dev/ttyUSB0", Baud: 9600, DataBits: 8, Parity: "none"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []PortConfig{
		{Baud: 9600, DataBits: 8},
		{Path: "/x", Baud: 9601, DataBits: 8},
		{Path: "/x", Baud: 9600, DataBits: 6},
		{Path: "/x", Baud: 9600, DataBits: 8, Parity: "mark"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
