package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// textInterceptor holds every string a request carries to one rule before
// any handler sees it: the string must be text PostgreSQL can store, and an
// id declared as a UUID takes its canonical spelling.
//
// PostgreSQL's text cannot hold U+0000 (SQLSTATE 22021), and a statement
// that meets one fails whole: in a group commit, the Sends of every other
// user in the batch with it. A rule per field would be forgotten on the next
// field; walking the decoded message by its descriptor covers every string
// field of every request, nested, repeated or a map key, with one check.
//
// UUIDs may arrive in any case (RFC 9562 reads them case-insensitively), but
// the database compares and constrains the lower-case form PostgreSQL
// prints, so a field whose protovalidate rule declares a UUID is lowered
// here. Ids then compare equal in Go as they do in PostgreSQL.
type textInterceptor struct {
	text *textRule
}

func (i textInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if m, ok := req.Any().(proto.Message); ok {
			if err := i.text.check(m.ProtoReflect()); err != nil {
				return nil, err
			}
		}
		return next(ctx, req)
	}
}

func (i textInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i textInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, textCheckedConn{conn, i.text})
	}
}

// textCheckedConn checks each message a stream receives.
type textCheckedConn struct {
	connect.StreamingHandlerConn
	text *textRule
}

func (c textCheckedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if m, ok := msg.(proto.Message); ok {
		return c.text.check(m.ProtoReflect())
	}
	return nil
}

// errNotText is why a string is refused; the field path goes before it.
var errNotText = errors.New("must be valid UTF-8 text without NUL (U+0000) characters")

// textRule is the rule textInterceptor applies, with what it learnt of the
// fields it met.
type textRule struct {
	// uuids caches, per field, whether its protovalidate rules declare a
	// UUID (for a list: its items). Descriptors never change, and the
	// request messages are a fixed, small set.
	uuids sync.Map // protoreflect.FullName → [2]bool{field, items}
}

// check applies the rule to every string in m, lowering UUIDs in place. Its
// error is InvalidArgument naming the field, as protovalidate's.
func (r *textRule) check(m protoreflect.Message) error {
	path, err := r.walk(m, nil)
	if err != nil {
		return invalidArgument(path, "parley.text", err.Error())
	}
	return nil
}

// walkText visits the set fields of m; on a refusal it returns the path of
// the field at fault (field names, list indexes and map keys, as
// protovalidate writes them).
func (r *textRule) walk(m protoreflect.Message, path []string) (string, error) {
	var badPath string
	var bad error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := append(path, string(fd.Name()))
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				kp := append(p[:len(p):len(p)], "["+strconv.Quote(k.String())+"]")
				if fd.MapKey().Kind() == protoreflect.StringKind {
					if err := checkText(k.String()); err != nil {
						badPath, bad = joinPath(kp), err
						return false
					}
				}
				badPath, bad = r.walkValue(fd.MapValue(), mv, kp, false, nil)
				return bad == nil
			})
		case fd.IsList():
			l, uuid := v.List(), r.uuidRules(fd)[1]
			for i := range l.Len() {
				ip := append(p[:len(p):len(p)], "["+strconv.Itoa(i)+"]")
				set := func(c string) { l.Set(i, protoreflect.ValueOfString(c)) }
				if badPath, bad = r.walkValue(fd, l.Get(i), ip, uuid, set); bad != nil {
					return false
				}
			}
		default:
			set := func(c string) { m.Set(fd, protoreflect.ValueOfString(c)) }
			badPath, bad = r.walkValue(fd, v, p, r.uuidRules(fd)[0], set)
		}
		return bad == nil
	})
	return badPath, bad
}

// walkValue checks one value of field fd: a string itself, a message by
// walking it. A string declared a UUID (uuid) that is one in upper case is
// stored lowered through set.
func (r *textRule) walkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path []string, uuid bool, set func(string)) (string, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := v.String()
		if uuid && isUUID(s) && strings.ToLower(s) != s {
			s = strings.ToLower(s)
			set(s)
		}
		if err := checkText(s); err != nil {
			return joinPath(path), err
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return r.walk(v.Message(), path)
	}
	return "", nil
}

func checkText(s string) error {
	if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
		return errNotText
	}
	return nil
}

func joinPath(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if i > 0 && !strings.HasPrefix(p, "[") {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// uuidOrEmptyPattern is how an optional field whose empty value means
// "remove" declares a UUID (avatar_media_id): protovalidate's uuid rule
// refuses an empty value that is present.
const uuidOrEmptyPattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"

func (r *textRule) uuidRules(fd protoreflect.FieldDescriptor) [2]bool {
	if v, ok := r.uuids.Load(fd.FullName()); ok {
		return v.([2]bool)
	}
	var v [2]bool
	if rules, ok := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules); ok && rules != nil {
		v[0] = rules.GetString().GetUuid() || rules.GetString().GetPattern() == uuidOrEmptyPattern
		v[1] = rules.GetRepeated().GetItems().GetString().GetUuid()
	}
	r.uuids.Store(fd.FullName(), v)
	return v
}
