package server_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// stringField is the way to one string inside a request message: the
// fields from the top, and whether the string is a map key.
type stringField struct {
	fields []protoreflect.FieldDescriptor
	mapKey bool
}

func (f stringField) String() string {
	var names []string
	for _, fd := range f.fields {
		names = append(names, string(fd.Name()))
	}
	s := strings.Join(names, ".")
	if f.mapKey {
		s += "[key]"
	}
	return s
}

// stringFields lists every string a message of md can carry, through nested
// messages, oneofs, lists and maps (each message type once per path, so
// recursive types end).
func stringFields(md protoreflect.MessageDescriptor, prefix []protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool) []stringField {
	if seen[md.FullName()] {
		return nil
	}
	seen[md.FullName()] = true
	defer delete(seen, md.FullName())
	var out []stringField
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		path := append(prefix[:len(prefix):len(prefix)], fd)
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() == protoreflect.StringKind {
				out = append(out, stringField{fields: path, mapKey: true})
			}
			switch fd.MapValue().Kind() {
			case protoreflect.StringKind:
				out = append(out, stringField{fields: path})
			case protoreflect.MessageKind:
				out = append(out, stringFields(fd.MapValue().Message(), path, seen)...)
			}
		case fd.Kind() == protoreflect.StringKind:
			out = append(out, stringField{fields: path})
		case fd.Kind() == protoreflect.MessageKind:
			out = append(out, stringFields(fd.Message(), path, seen)...)
		}
	}
	return out
}

// set puts s at the string field f of m, creating the messages, list items
// and map entries on the way.
func (f stringField) set(m protoreflect.Message, s string) {
	for i, fd := range f.fields {
		last := i == len(f.fields)-1
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			key, val := protoreflect.ValueOfString("k").MapKey(), protoreflect.Value{}
			if last && f.mapKey {
				key = protoreflect.ValueOfString(s).MapKey()
			}
			switch fd.MapValue().Kind() {
			case protoreflect.StringKind:
				val = protoreflect.ValueOfString("v")
				if last && !f.mapKey {
					val = protoreflect.ValueOfString(s)
				}
				mp.Set(key, val)
			case protoreflect.MessageKind:
				val = mp.Mutable(key)
				m = val.Message()
			default:
				mp.Set(key, fd.MapValue().Default())
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			if last {
				l.Append(protoreflect.ValueOfString(s))
			} else {
				m = l.AppendMutable().Message()
			}
		case last:
			m.Set(fd, protoreflect.ValueOfString(s))
		default:
			m = m.Mutable(fd).Message()
		}
	}
}

// parleyMethods are the RPCs of every Parley service.
func parleyMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("parley.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				out = append(out, sd.Methods().Get(j))
			}
		}
		return true
	})
	if len(out) < 60 {
		t.Fatalf("found %d Parley RPCs in the registry, want the whole API", len(out))
	}
	return out
}

// dynamicClient calls method over Connect or gRPC with messages built from
// its descriptors, so that one client reaches every RPC.
func (e *env) dynamicClient(md protoreflect.MethodDescriptor, opts []connect.ClientOption) *connect.Client[dynamicpb.Message, dynamicpb.Message] {
	url := e.srv.URL + "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
	opts = append(opts[:len(opts):len(opts)],
		connect.WithSchema(md),
		connect.WithResponseInitializer(func(spec connect.Spec, msg any) error {
			res, ok := msg.(*dynamicpb.Message)
			if !ok {
				return errors.New("response is not a dynamic message")
			}
			*res = *dynamicpb.NewMessage(spec.Schema.(protoreflect.MethodDescriptor).Output())
			return nil
		}))
	return connect.NewClient[dynamicpb.Message, dynamicpb.Message](e.client, url, opts...)
}

// call sends req to md and returns the error of the call (for a stream,
// the error that ends it).
func (e *env) call(ctx context.Context, md protoreflect.MethodDescriptor, req *dynamicpb.Message, opts []connect.ClientOption) error {
	c := e.dynamicClient(md, opts)
	if md.IsStreamingServer() {
		stream, err := c.CallServerStream(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		defer stream.Close()
		for stream.Receive() {
		}
		return stream.Err()
	}
	_, err := c.CallUnary(ctx, connect.NewRequest(req))
	return err
}

// indexes are the list indexes and map keys of a field path in an error.
var indexes = regexp.MustCompile(`\[[^\]]*\]`)

// TestEveryRequestStringRefusesNUL walks every string field of every
// request message, from the descriptors, and sends each RPC a request whose
// string there holds a NUL: PostgreSQL cannot store one, and before the
// check many RPCs (Login, Register, Send in a group commit with other
// users' messages) failed with Internal. Each must be InvalidArgument naming
// the field, whoever calls.
func TestEveryRequestStringRefusesNUL(t *testing.T) {
	e := newEnv(t)
	alice := e.signUp("alice")
	fields := 0
	for _, md := range parleyMethods(t) {
		if md.IsStreamingClient() {
			t.Fatalf("%s streams from the client; this test sends one request", md.FullName())
		}
		for _, f := range stringFields(md.Input(), nil, map[protoreflect.FullName]bool{}) {
			fields++
			t.Run(string(md.Name())+"/"+f.String(), func(t *testing.T) {
				forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
					req := dynamicpb.NewMessage(md.Input())
					f.set(req, "bad\x00text")
					err := e.call(alice.ctx(), md, req, opts)
					if got := connect.CodeOf(err); got != connect.CodeInvalidArgument {
						t.Fatalf("%s with NUL in %s: got %v (%v), want InvalidArgument", md.FullName(), f, got, err)
					}
					var cerr *connect.Error
					if !errors.As(err, &cerr) || !strings.HasPrefix(indexes.ReplaceAllString(cerr.Message(), ""), strings.TrimSuffix(f.String(), "[key]")+":") ||
						!strings.Contains(cerr.Message(), "NUL") {
						t.Fatalf("%s with NUL in %s: message %q does not name the field and the rule", md.FullName(), f, cerr.Message())
					}
				})
			})
		}
	}
	if fields < 50 {
		t.Fatalf("walked %d string fields, want every one of the API's", fields)
	}
	t.Logf("%d string fields refused a NUL over both protocols", fields)
}

// TestPublicRPCsRefuseNULBeforeAnything sends NULs to the RPCs anyone may
// call, without a token: Login and Register answered Internal and logged an
// error for each, which let anyone fill the server's log.
func TestPublicRPCsRefuseNULBeforeAnything(t *testing.T) {
	e := newEnv(t)
	e.register("bob", "Bob")
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		auth := e.auth(opts...)
		_, err := auth.Login(context.Background(), &parleyv1.LoginRequest{Username: "bob\x00", Password: "x", DeviceName: "d", Platform: parleyv1.Platform_PLATFORM_CLI})
		wantCode(t, err, connect.CodeInvalidArgument)
		_, err = auth.Register(context.Background(), &parleyv1.RegisterRequest{Username: "carol", Password: passwordOf("carol"), DisplayName: "Ca\x00rol"})
		wantCode(t, err, connect.CodeInvalidArgument)
	})
	if n := e.count("users"); n != 1 {
		t.Fatalf("users: got %d, want 1 (nothing half-written)", n)
	}
}

// TestUpperCaseUUIDsAreTheSameIDs sends ids in upper case, a valid spelling
// of a UUID: they broke a check constraint (Internal) where the server
// ordered two ids in Go. They name the same rows as their canonical form,
// and what is stored and returned is canonical.
func TestUpperCaseUUIDsAreTheSameIDs(t *testing.T) {
	e := newEnv(t)
	alice, bob, conv := e.pair("alice", "bob")
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		m := e.msgs(opts...)
		upper := strings.ToUpper(alice.user.GetId())
		res, err := m.CreateDirectConversation(bob.ctx(), &parleyv1.CreateDirectConversationRequest{UserId: upper})
		if err != nil {
			t.Fatalf("CreateDirectConversation(%s): %v", upper, err)
		}
		if got := res.GetConversation().GetId(); got != conv {
			t.Fatalf("got conversation %s, want the pair's %s", got, conv)
		}
		sent, err := m.Send(bob.ctx(), text(upper, "hi", ""))
		if err != nil {
			t.Fatalf("Send to %s: %v", upper, err)
		}
		if sent.GetConversationId() != conv {
			t.Fatalf("sent into %s, want %s", sent.GetConversationId(), conv)
		}
		sent, err = m.Send(alice.ctx(), text("", "hello", strings.ToUpper(conv)))
		if err != nil {
			t.Fatalf("Send into %s: %v", strings.ToUpper(conv), err)
		}
		if sent.GetConversationId() != conv {
			t.Fatalf("sent into %s, want %s", sent.GetConversationId(), conv)
		}
		got, err := e.auth(opts...).GetUsers(alice.ctx(), &parleyv1.GetUsersRequest{UserIds: []string{strings.ToUpper(bob.user.GetId())}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.GetUsers()) != 1 || got.GetUsers()[0].GetId() != bob.user.GetId() {
			t.Fatalf("GetUsers by an upper-case id: got %v, want bob", got.GetUsers())
		}
		// The same id twice, in two spellings, is one id.
		g := e.groups(opts...)
		_, err = g.CreateGroup(alice.ctx(), &parleyv1.CreateGroupRequest{Name: "g", MemberIds: []string{bob.user.GetId(), strings.ToUpper(bob.user.GetId())}})
		wantCode(t, err, connect.CodeInvalidArgument)
	})
	if n := e.count(chatConversations); n != 1 {
		t.Fatalf("conversations: got %d, want the pair's one", n)
	}
}
