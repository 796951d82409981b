// Package pgwire holds the server side of the Postgres wire protocol that our protocol
// fakes (internal/pageservertest, internal/sktest) share: the startup handshake, a cleartext
// password exchange and error answers, on top of pgx's pgproto3.
package pgwire

import (
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// ReadStartup reads the startup packet of a new connection, refusing SSL and GSS
// encryption requests ('N') on the way. It returns nil (and no error) for anything that is
// not a session, such as a cancel request.
func ReadStartup(c net.Conn, be *pgproto3.Backend) (*pgproto3.StartupMessage, error) {
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case *pgproto3.StartupMessage:
			return m, nil
		default:
			return nil, nil
		}
	}
}

// ErrNotPassword is returned by AskPassword when the client answers with something else.
var ErrNotPassword = errors.New("expected a password message")

// AskPassword asks for a cleartext password and returns it.
func AskPassword(be *pgproto3.Backend) (string, error) {
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := be.Flush(); err != nil {
		return "", err
	}
	if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return "", err
	}
	msg, err := be.Receive()
	if err != nil {
		return "", err
	}
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return "", fmt.Errorf("%w, got %T", ErrNotPassword, msg)
	}
	return pw.Password, nil
}

// Fatal answers with a FATAL error (the session ends) and returns msg as an error.
func Fatal(be *pgproto3.Backend, code, msg string) error {
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	_ = be.Flush()
	return errors.New(msg)
}

// Serve runs the simple-query loop of an authenticated session until the client sends
// Terminate (nil) or the connection fails: every Query goes to query, any other message
// is answered with an error and the session goes on.
func Serve(be *pgproto3.Backend, query func(sql string) error) error {
	for {
		msg, err := be.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.Terminate:
			return nil
		case *pgproto3.Query:
			if err := query(m.String); err != nil {
				return err
			}
		default:
			be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: fmt.Sprintf("unsupported message %T", msg)})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := be.Flush(); err != nil {
				return err
			}
		}
	}
}
