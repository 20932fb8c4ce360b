package syncstream

import "testing"

// A Dendrite token (s{pdu}_{typing}_{receipt}_{to-device}_{invite}_{account
// data}_{device list}_{notification data}_{presence}) maps onto the streams
// an import from Dendrite keeps the positions of.
func TestParseDendriteToken(t *testing.T) {
	p, err := ParseToken("s35_7_12_4_2_9_3_1_6")
	if err != nil {
		t.Fatal(err)
	}
	want := Position{Events: 35, Receipts: 12, ToDevice: 4, AccountData: 9, DeviceLists: 3}
	if p != want {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	for _, bad := range []string{"s35_7_12_4_2_9_3_1_x", "s35_7_12_4_2_9_3_1_-6", "s1_2_3_4_5_6_7_8_9_10"} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
