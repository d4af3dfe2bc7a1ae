package server

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// requestTypes are the request messages of every Parley RPC, by name.
func requestTypes(tb testing.TB) []protoreflect.MessageType {
	tb.Helper()
	var names []string
	protoregistry.GlobalFiles.RangeFilesByPackage("parley.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			for j := range fd.Services().Get(i).Methods().Len() {
				names = append(names, string(fd.Services().Get(i).Methods().Get(j).Input().FullName()))
			}
		}
		return true
	})
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]protoreflect.MessageType, 0, len(names))
	for _, n := range names {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(n))
		if err != nil {
			tb.Fatalf("request type %s: %v", n, err)
		}
		out = append(out, mt)
	}
	return out
}

// FuzzRequestText decodes arbitrary bytes as each request message, as the
// server does, and runs what a request meets before its handler: the text
// rule, then protovalidate. Neither may panic; a request the text rule
// passes holds only storable text and canonical UUIDs, passes again
// unchanged, and whatever either refuses is InvalidArgument.
func FuzzRequestText(f *testing.F) {
	types := requestTypes(f)
	f.Add("parley.v1.SendRequest", mustMarshal(f, &parleyv1.SendRequest{
		ClientMsgId: "c1", Target: &parleyv1.SendRequest_UserId{UserId: "0198C6D2-6F1B-7E4A-9C3D-2B1A0F9E8D7C"},
		Content: &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: "hi\x00"}}, MentionUserIds: []string{"0198c6d2-6f1b-7e4a-9c3d-2b1a0f9e8d7c"},
	}))
	f.Add("parley.v1.SyncRequest", mustMarshal(f, &parleyv1.SyncRequest{Cursors: []*parleyv1.Cursor{{ConversationId: "0198C6D2-6F1B-7E4A-9C3D-2B1A0F9E8D7C", Seq: 3}}}))
	// Invalid UTF-8, which proto.Marshal will not write: the codec refuses
	// it in proto3 strings, and the rule would too.
	f.Add("parley.v1.LoginRequest", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "al\xffice"))
	f.Add("parley.v1.SignalRequest", []byte{0x0a, 0x03, 'a', 0, 'b', 0x22, 0x05, 0x0a, 0x01, 'm', 0x10, 0x01})
	validator, err := protovalidate.New()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		i := slices.IndexFunc(types, func(mt protoreflect.MessageType) bool { return string(mt.Descriptor().FullName()) == name })
		if i < 0 {
			i = len(name) % len(types)
		}
		msg := types[i].New().Interface()
		if proto.Unmarshal(b, msg) != nil {
			return // the codec refuses it before any interceptor runs
		}
		rule := &textRule{}
		if err := rule.check(msg.ProtoReflect()); err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("text rule: %v, want InvalidArgument", err)
			}
			return
		}
		before := proto.Clone(msg)
		if err := rule.check(msg.ProtoReflect()); err != nil || !proto.Equal(before, msg) {
			t.Fatalf("text rule is not idempotent: %v", err)
		}
		assertStorable(t, rule, msg.ProtoReflect(), "")
		if err := validator.Validate(msg); err != nil {
			var verr *protovalidate.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("protovalidate failed, not refused: %v", err)
			}
		}
	})
}

// assertStorable fails t on any string in m that PostgreSQL could not
// store, or any UUID field not in canonical form.
func assertStorable(t *testing.T, rule *textRule, m protoreflect.Message, path string) {
	t.Helper()
	check := func(fd protoreflect.FieldDescriptor, s string, uuid bool, at string) {
		if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
			t.Fatalf("%s: %q passed the text rule", at, s)
		}
		if uuid && isUUID(s) && strings.ToLower(s) != s {
			t.Fatalf("%s: UUID %q left in upper case", at, s)
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		at := path + "." + string(fd.Name())
		rules := rule.uuidRules(fd)
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind {
					check(fd, k.String(), false, at+"[key]")
				}
				switch fd.MapValue().Kind() {
				case protoreflect.StringKind:
					check(fd, mv.String(), false, at+"[value]")
				case protoreflect.MessageKind:
					assertStorable(t, rule, mv.Message(), at)
				}
				return true
			})
		case fd.IsList():
			for i := range v.List().Len() {
				switch fd.Kind() {
				case protoreflect.StringKind:
					check(fd, v.List().Get(i).String(), rules[1], at)
				case protoreflect.MessageKind:
					assertStorable(t, rule, v.List().Get(i).Message(), at)
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			check(fd, v.String(), rules[0], at)
		case fd.Kind() == protoreflect.MessageKind:
			assertStorable(t, rule, v.Message(), at)
		}
		return true
	})
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestTextRuleOnDynamicMessages: the rule reads descriptors, not generated
// types, so a request decoded as a dynamic message meets it the same way.
func TestTextRuleOnDynamicMessages(t *testing.T) {
	md := (&parleyv1.GetUsersRequest{}).ProtoReflect().Descriptor()
	m := dynamicpb.NewMessage(md)
	l := m.Mutable(md.Fields().ByName("user_ids")).List()
	l.Append(protoreflect.ValueOfString("0198C6D2-6F1B-7E4A-9C3D-2B1A0F9E8D7C"))
	if err := (&textRule{}).check(m); err != nil {
		t.Fatal(err)
	}
	if got := l.Get(0).String(); got != "0198c6d2-6f1b-7e4a-9c3d-2b1a0f9e8d7c" {
		t.Fatalf("got %s, want the canonical spelling", got)
	}
	l.Append(protoreflect.ValueOfString("x\x00"))
	if err := (&textRule{}).check(m); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.HasPrefix(err.(*connect.Error).Message(), "user_ids[1]:") {
		t.Fatalf("got %v, want InvalidArgument naming user_ids[1]", err)
	}
}

// BenchmarkTextRuleSend is the rule's cost on a typical Send.
func BenchmarkTextRuleSend(b *testing.B) {
	req := &parleyv1.SendRequest{
		ClientMsgId: "0198c6d2-6f1b-7e4a-9c3d-2b1a0f9e8d7c", Target: &parleyv1.SendRequest_ConversationId{ConversationId: "0198c6d2-6f1b-7e4a-9c3d-2b1a0f9e8d7c"},
		Content: &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: strings.Repeat("hello world ", 10)}},
	}
	rule := &textRule{}
	b.ReportAllocs()
	for b.Loop() {
		if err := rule.check(req.ProtoReflect()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTextRuleKnowsEveryUUIDField: each request field whose rules accept
// only UUIDs (by the uuid rule or the empty-or-UUID pattern) is lowered;
// a field named like an id that is neither would escape canonical form.
func TestTextRuleKnowsEveryUUIDField(t *testing.T) {
	rule := &textRule{}
	notUUIDs := map[string]bool{"client_msg_id": true, "code": true, "device_id": true, "track_id": true, "stream_id": true, "mid": true, "sdp_mid": true}
	// Set by the server in what it returns; a Send's content carries them
	// but the server ignores them and fills them from the stored media.
	serverSet := map[protoreflect.FullName]bool{"parley.v1.ImageContent.thumbnail_media_id": true, "parley.v1.VideoContent.thumbnail_media_id": true}
	var visit func(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool)
	visit = func(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			name := string(fd.Name())
			if fd.Kind() == protoreflect.StringKind && !fd.IsMap() && (strings.HasSuffix(name, "_id") || strings.HasSuffix(name, "_ids")) && !notUUIDs[name] && !serverSet[fd.FullName()] {
				if r := rule.uuidRules(fd); !r[0] && !r[1] {
					t.Errorf("%s looks like an id but its rules do not declare a UUID", fd.FullName())
				}
			}
			if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
				visit(fd.Message(), seen)
			}
		}
	}
	for _, mt := range requestTypes(t) {
		visit(mt.Descriptor(), map[protoreflect.FullName]bool{})
	}
}
