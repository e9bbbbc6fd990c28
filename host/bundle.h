/* Plugin bundles: the deployable unit of a plugin version (issue 9).
 *
 * A bundle is ONE JSON file, so that it travels over HTTP or a drop
 * directory and needs no archive library, e.g. meter-1.2.0.bundle:
 *
 *   {"format": "plantd-bundle/1",
 *    "manifest": {"name": "meter",        the descriptor's module name
 *                 "version": "1.2.0",     the descriptor's version
 *                 "abi": "1.6",           the SDK ABI it was built against
 *                 "sha256": "9f86d0...",  hex of the module's bytes
 *                 "size": 16384,          the module's bytes
 *                 "config": {...},        optional: a settings fragment
 *                 "created": "2025-01-31T12:00:00Z"},   optional, UTC
 *    "signature": {"alg": "ed25519",      optional
 *                  "key_id": "0123456789abcdef",
 *                  "sig": "base64..."},
 *    "module": "base64 of the .so"}
 *
 * The signature is ed25519 over the canonical manifest text, which is
 * json_dumps(manifest, JSON_COMPACT | JSON_SORT_KEYS) (jansson's own
 * output: no blanks, keys sorted, UTF-8 unescaped). The manifest carries the
 * module's sha256, so the signature covers the module too. key_id is the
 * first 16 hex digits of the sha256 of the raw 32-byte public key; it picks
 * the trusted key, it is not itself trusted. Manifest members this version
 * does not know are kept, and signed like the others.
 *
 * Name and version become parts of file names, so both are 1 to 128 of
 * [A-Za-z0-9._+-] and do not start with '.' or '-'.
 *
 * Keys are what `openssl genpkey -algorithm ed25519 -out key.pem` (private,
 * PEM, unencrypted) and `openssl pkey -in key.pem -pubout -out pub.pem`
 * (public) write.
 *
 * The command line is tools/plantd-bundle (pack, verify, show).
 *
 * Every function is reentrant and may be called from any thread; a struct
 * bundle is read-only after bundle_parse(), so threads may share one.
 * Errors are a status and a sentence in err naming the file and the
 * reason. */
#ifndef PLANTD_BUNDLE_H
#define PLANTD_BUNDLE_H

#include <stddef.h>
#include <jansson.h>

#include "plantd/plantd.h"

#define BUNDLE_FORMAT "plantd-bundle/1"

/* The largest bundle file read: its base64 must fit OpenSSL's int
 * lengths. */
#define BUNDLE_MAX_BYTES ((size_t)1 << 30)

struct bundle;

/* Read and check the bundle file `path` (see bundle_parse). PLANT_E_IO when
 * the file cannot be read. */
int bundle_read(const char *path, struct bundle **out, char *err, size_t errlen);

/* Parse and check a bundle held in memory; `origin` (a file name or a URL)
 * names it in messages. Checks the format, the manifest's members and their
 * types, the signature's shape (not its validity: see bundle_verify), the
 * module's base64, its size and that its sha256 equals the manifest's
 * ("sha256 mismatch: manifest says X, module is Y"). PLANT_E_INVALID for a
 * bad bundle, PLANT_E_NOMEM. On failure *out is untouched. */
int bundle_parse(const char *data, size_t len, const char *origin, struct bundle **out, char *err,
		 size_t errlen);

void bundle_free(struct bundle *b);

/* ---- what a bundle says ----------------------------------------------------
 * Everything returned is [borrowed]: valid until bundle_free(). */

const json_t *bundle_manifest(const struct bundle *b);
const char *bundle_origin(const struct bundle *b);
const char *bundle_name(const struct bundle *b);
const char *bundle_version(const struct bundle *b);
const char *bundle_abi(const struct bundle *b);	   /* "MAJOR.MINOR" */
const char *bundle_sha256(const struct bundle *b); /* 64 lower-case hex digits */
size_t bundle_size(const struct bundle *b);
/* The settings fragment (an object), or NULL when there is none. */
const json_t *bundle_config(const struct bundle *b);
/* 1 when the bundle carries a signature (not yet checked), else 0. */
int bundle_signed(const struct bundle *b);
/* The signature's key_id, or NULL when unsigned. */
const char *bundle_key_id(const struct bundle *b);
/* The module's bytes. */
const unsigned char *bundle_module(const struct bundle *b, size_t *len);

/* ---- checks ----------------------------------------------------------------- */

/* Can this host load the module? The rule of loader_check_desc: the same
 * major, a minor no newer than the host's. PLANT_E_ABI, e.g. "bundle F:
 * module meter built for SDK 1.7, host provides 1.6". */
int bundle_check_abi(const struct bundle *b, char *err, size_t errlen);

/* Check the signature against the trusted public keys (PEM files).
 *
 *                   unsigned          signed
 *   no keys         OK / refused(*)   OK, unchecked / refused(*)
 *   keys            OK / refused(*)   checked: the key_id must be one of
 *                                     the keys and the signature valid
 *
 * (*) when `required`. A signature is checked whenever there are trusted
 * keys, required or not: a bundle that claims a signer the site does not
 * know, or whose signature is wrong, was tampered with or comes from
 * elsewhere. With no keys and `required`, nothing can pass: a site
 * misconfiguration, said so.
 *
 * PLANT_OK; PLANT_E_INVALID for a refused bundle ("bundle F is not signed
 * and the site requires signatures", "bundle F is signed by key K, which is
 * not among the trusted keys (...)", "bundle F: bad signature by key K");
 * PLANT_E_CONFIG for a key file that cannot be read or is not an ed25519
 * public key, or for required without keys. */
int bundle_verify(const struct bundle *b, const char *const *trusted_key_files, size_t n_keys,
		  int required, char *err, size_t errlen);

/* ---- writing ----------------------------------------------------------------- */

/* Write the module to DIR/NAME-VERSION-SHA12.so (SHA12: the first 12 hex
 * digits of its sha256) and put that path into path_out. One file per
 * content: the host shares open modules by path, so a new version must be a
 * new path. DIR is made as by mkdir -p (0755). The file is written to a
 * temporary name, fsync'd and renamed, so a reader sees all of it or none;
 * a file already there with the same bytes is kept as it is (a file with
 * other bytes there is replaced by the rename, never rewritten in place: a
 * module the host has mapped stays intact). PLANT_E_IO, PLANT_E_INVALID
 * (path too long), PLANT_E_NOMEM. */
int bundle_write_module(const struct bundle *b, const char *dir, char *path_out, size_t len,
			char *err, size_t errlen);

/* Make a bundle of the plugin module `so_path`: name, version and ABI come
 * from its descriptor (the module is dlopen()ed, RTLD_NOW | RTLD_LOCAL, so
 * its constructors run: pack only what you built). The descriptor's first
 * members, the same in every major, are all that is read; whether a host
 * can load the module is the host's call (bundle_check_abi), not the
 * packer's. `config` ([borrowed], may be NULL) must be an object; it is
 * copied into the manifest. With `sign_key_file` (an unencrypted PEM ed25519
 * private key) the bundle is signed. "created" is now, or
 * $SOURCE_DATE_EPOCH when set (reproducible builds).
 *
 * *out is a [new] reference to the bundle's JSON, ready for json_dump_file.
 * PLANT_E_IO (unreadable files), PLANT_E_INVALID (not a plantd plugin, no
 * name or version, a bad config), PLANT_E_CONFIG (a bad key file),
 * PLANT_E_NOMEM. */
int bundle_pack(const char *so_path, const json_t *config, const char *sign_key_file, json_t **out,
		char *err, size_t errlen);

/* The key_id of a PEM public or private ed25519 key file, into key_id (17
 * bytes). PLANT_E_CONFIG when the file is not such a key. */
int bundle_key_file_id(const char *key_file, char key_id[17], char *err, size_t errlen);

#endif
