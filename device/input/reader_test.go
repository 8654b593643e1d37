package input

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDeviceSpec(t *testing.T) {
	if err := (DeviceSpec{}).Validate(); err == nil {
		t.Fatal("empty spec accepted")
	}
	if err := (DeviceSpec{VendorProduct: "0c2e:zz"}).Validate(); err == nil {
		t.Fatal("bad vendor:product accepted")
	}
	if err := (DeviceSpec{VendorProduct: "0c2e:0b61"}).Validate(); err != nil {
		t.Fatal(err)
	}
	// No input devices here: searching by name fails with a clear error.
	_, err := DeviceSpec{Name: "nothing", Root: t.TempDir()}.Find()
	if err == nil || !strings.Contains(err.Error(), `"nothing"`) {
		t.Fatalf("find: %v", err)
	}
}
