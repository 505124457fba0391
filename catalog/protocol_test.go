package catalog

import (
	"testing"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestRequiredVersion: every operation of Command has a version this build
// applies, and a command without an operation needs none.
func TestRequiredVersion(t *testing.T) {
	if v := RequiredVersion(&v1.Command{}); v != 0 {
		t.Fatalf("command without operation needs %d, want 0", v)
	}
	cmd := &v1.Command{}
	m := cmd.ProtoReflect()
	oneof := m.Descriptor().Oneofs().ByName("op")
	fields := oneof.Fields()
	if fields.Len() == 0 {
		t.Fatal("Command has no operations")
	}
	for i := range fields.Len() {
		fd := fields.Get(i)
		c := &v1.Command{}
		cm := c.ProtoReflect()
		cm.Set(fd, protoreflect.ValueOfMessage(cm.NewField(fd).Message()))
		if v := RequiredVersion(c); v < 1 || v > ProtocolVersion {
			t.Errorf("operation %s needs version %d, want 1..%d (ProtocolVersion)", fd.Name(), v, ProtocolVersion)
		}
	}
}
