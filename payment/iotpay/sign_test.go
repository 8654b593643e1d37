package iotpay

import "testing"

func TestSignVectors(t *testing.T) {
	tests := []struct {
		name   string
		fields map[string]string
		key    string
		want   string
	}{
		{"docs abc", map[string]string{"c": "cat", "a": "apple", "b": "boat"}, "test", "5DB2B506D282A500D06AEB8DC89FBAC1"},
		{"docs merchant", map[string]string{"mchOrderNo": "1557771065", "mchId": "10000576"}, "TESTKEY1234567890", "B582A4BDC1EB22570FDA8E861655DD5E"},
		{"empty values and sign dropped", map[string]string{"a": "apple", "b": "boat", "c": "cat", "d": "", "sign": "XYZ"}, "test", "5DB2B506D282A500D06AEB8DC89FBAC1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Sign(tc.fields, tc.key); got != tc.want {
				t.Errorf("Sign = %s, want %s", got, tc.want)
			}
			if !Verify(tc.fields, tc.key, tc.want) {
				t.Error("Verify rejected the correct signature")
			}
			if Verify(tc.fields, tc.key+"x", tc.want) {
				t.Error("Verify accepted a signature under another key")
			}
		})
	}
}

func TestSignByteOrder(t *testing.T) {
	// Upper-case names sort before lower-case ones in byte order.
	a := Sign(map[string]string{"B": "1", "a": "2"}, "k")
	b := Sign(map[string]string{"a": "2", "B": "1"}, "k")
	if a != b {
		t.Fatal("signature depends on map order")
	}
	if Sign(map[string]string{"B": "1", "a": "2"}, "k") == Sign(map[string]string{"b": "1", "a": "2"}, "k") {
		t.Fatal("names must be case-sensitive")
	}
}

func TestMaskCode(t *testing.T) {
	tests := map[string]string{
		"":                       "",
		"1":                      "*",
		"12345678":               "******78",
		"134567890123456789":     "13************6789",
		"2812345678901234567890": "28****************7890",
	}
	for in, want := range tests {
		if got := MaskCode(in); got != want {
			t.Errorf("MaskCode(%q) = %q, want %q", in, got, want)
		}
	}
}
