package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// tlsEnvs are the TLS settings of Redis and NATS.
var tlsEnvs = []string{"REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVER_NAME"}

// natsTLSEnvs are the TLS settings of NATS.
var natsTLSEnvs = []string{"NATS_TLS_CA_FILE", "NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE"}

// redisTLS applies REDIS_TLS_* to opt, whose TLSConfig a rediss:// URL set.
func (r *resolver) redisTLS(opt *redis.Options) {
	ca, cert, key, name := r.str("REDIS_TLS_CA_FILE"), r.str("REDIS_TLS_CERT_FILE"), r.str("REDIS_TLS_KEY_FILE"), r.str("REDIS_TLS_SERVER_NAME")
	if ca == "" && cert == "" && key == "" && name == "" {
		return
	}
	if opt.TLSConfig == nil {
		_, url := r.get("REDIS_URL")
		r.fail(url, "must be a rediss:// URL when REDIS_TLS_* files are set")
		return
	}
	if ca != "" {
		opt.TLSConfig.RootCAs = r.certPool("REDIS_TLS_CA_FILE", ca)
	}
	if c := r.keyPair("REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", cert, key); c != nil {
		opt.TLSConfig.Certificates = []tls.Certificate{*c}
	}
	if name != "" {
		opt.TLSConfig.ServerName = name
	}
}

// NATSTLS are the files of a TLS connection to NATS; the zero value is
// none (a tls:// URL then uses the system's roots).
type NATSTLS struct{ CA, Cert, Key string }

func (r *resolver) natsTLS() NATSTLS {
	t := NATSTLS{CA: r.str("NATS_TLS_CA_FILE"), Cert: r.str("NATS_TLS_CERT_FILE"), Key: r.str("NATS_TLS_KEY_FILE")}
	if t.CA != "" {
		r.certPool("NATS_TLS_CA_FILE", t.CA)
	}
	r.keyPair("NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE", t.Cert, t.Key)
	return t
}

// NATSOptions are the connection options of the credentials file and the
// TLS files, for every command that connects to NATS.
func NATSOptions(creds string, t NATSTLS) []nats.Option {
	var opts []nats.Option
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if t.CA != "" {
		opts = append(opts, nats.RootCAs(t.CA))
	}
	if t.Cert != "" {
		opts = append(opts, nats.ClientCert(t.Cert, t.Key))
	}
	return opts
}

// certPool reads a PEM bundle of CA certificates; a bad file is a
// configuration error naming the setting.
func (r *resolver) certPool(env, path string) *x509.CertPool {
	_, name := r.get(env)
	b, err := os.ReadFile(path)
	if err != nil {
		r.fail(name, "cannot read the CA file: %v", err)
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		r.fail(name, "%s holds no PEM certificate", path)
	}
	return pool
}

// keyPair loads a client certificate and its key; both or neither.
func (r *resolver) keyPair(certEnv, keyEnv, cert, key string) *tls.Certificate {
	if cert == "" && key == "" {
		return nil
	}
	_, certName := r.get(certEnv)
	_, keyName := r.get(keyEnv)
	if cert == "" || key == "" {
		r.fail(certName, "and %s go together (mutual TLS needs both)", keyName)
		return nil
	}
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		r.fail(certName, "with %s: %v", keyName, err)
		return nil
	}
	return &c
}
