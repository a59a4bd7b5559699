package main

import (
	"flag"
	"os"
	"time"

	"github.com/spaces-authz/spaces-authz/fanout"
)

// natsFlags configure the NATS connection (run, tail). User and password
// come from CONSUMER_NATS_USER and CONSUMER_NATS_PASSWORD only.
type natsFlags struct {
	url, creds, ca, cert, key, stream, prefix string
}

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats-url", "", "NATS URL; turns the JetStream fan-out on (user/password from CONSUMER_NATS_USER/CONSUMER_NATS_PASSWORD)")
	fs.StringVar(&n.creds, "nats-creds", "", "NATS credentials file")
	fs.StringVar(&n.ca, "nats-ca", "", "PEM CA bundle to verify NATS's TLS certificate")
	fs.StringVar(&n.cert, "nats-cert", "", "client certificate for NATS (mTLS)")
	fs.StringVar(&n.key, "nats-key", "", "client key for NATS (mTLS)")
	fs.StringVar(&n.stream, "nats-stream", fanout.DefaultStream, "JetStream stream name")
	fs.StringVar(&n.prefix, "nats-subject-prefix", fanout.DefaultSubjectPrefix, "subject prefix")
}

// config returns nil when NATS is off.
func (n *natsFlags) config(maxAge time.Duration) *fanout.Config {
	if n.url == "" {
		return nil
	}
	return &fanout.Config{URL: n.url, User: os.Getenv(EnvPrefix + "NATS_USER"), Password: os.Getenv(EnvPrefix + "NATS_PASSWORD"),
		CredsFile: n.creds, CAFile: n.ca, CertFile: n.cert, KeyFile: n.key, Stream: n.stream, SubjectPrefix: n.prefix,
		MaxAge: maxAge}
}
