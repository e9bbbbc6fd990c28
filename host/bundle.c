#include "bundle.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define SHA256_HEX	 64
#define KEY_ID_HEX	 16
#define SHA_IN_NAME	 12 /* hex digits of the sha256 in a module's file name */
#define ED25519_SIG	 64
#define ED25519_KEY	 32
#define NAME_MAX_LEN	 128
/* A module whose base64 still fits a bundle. */
#define MODULE_MAX_BYTES (BUNDLE_MAX_BYTES / 4 * 3 - 4096)

struct bundle {
	char *origin;
	json_t *manifest;		  /* the only reference kept of the document */
	char *canonical;		  /* the canonical manifest text, when signed */
	const char *name, *version, *abi; /* [borrowed] from manifest */
	const json_t *config;		  /* [borrowed] from manifest, or NULL */
	unsigned abi_major, abi_minor;
	char sha256[SHA256_HEX + 1];
	size_t size;
	unsigned char *module;
	size_t module_len;
	int has_sig;
	char key_id[KEY_ID_HEX + 1];
	unsigned char sig[ED25519_SIG];
};

__attribute__((format(printf, 4, 5))) static int fail(int rc, char *err, size_t errlen,
						      const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* ---- small pieces ------------------------------------------------------------ */

static void hex(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* `n` hex digits and nothing else; copied lower-case into out (n + 1). */
static int hex_lower(const char *s, size_t n, char *out)
{
	if (strlen(s) != n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= 'A' && c <= 'F')
			c = (char)(c - 'A' + 'a');
		else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -1;
		out[i] = c;
	}
	out[n] = '\0';
	return 0;
}

static int sha256_hex(const unsigned char *p, size_t n, char out[SHA256_HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		ERR_clear_error();
		return -1;
	}
	hex(md, mdlen, out);
	return 0;
}

static int b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* Strict base64 (RFC 4648 alphabet, padded, no blanks) into a malloc'd
 * buffer. EVP_DecodeBlock alone would take blanks at the ends and count the
 * padding as decoded zero bytes: the text is checked first and the padding
 * taken off its length. -1 for bad text, -2 out of memory. */
static int b64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen)
{
	if (n % 4 != 0 || n > INT_MAX)
		return -1;
	size_t pad = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=') {
			if (i + 2 < n)
				return -1;
			pad++;
		} else if (pad || !b64_char(s[i])) {
			return -1;
		}
	}
	unsigned char *buf = malloc(n / 4 * 3 + 1);
	if (!buf)
		return -2;
	int r = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)n);
	if (r < 0 || (size_t)r < pad) {
		free(buf);
		return -1;
	}
	*out = buf;
	*outlen = (size_t)r - pad;
	return 0;
}

/* A malloc'd NUL-terminated base64 text, or NULL. */
static char *b64_encode(const unsigned char *p, size_t n)
{
	if (n > (size_t)INT_MAX / 4 * 3)
		return NULL;
	char *out = malloc((n + 2) / 3 * 4 + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* Name and version become parts of file names. */
static int file_part_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > NAME_MAX_LEN || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '+' || c == '-'))
			return 0;
	}
	return 1;
}

#define FILE_PART_RULE "1 to 128 of A-Z a-z 0-9 . _ + -, not starting with . or -"

/* "MAJOR.MINOR", each a plain decimal number. */
static int parse_abi(const char *s, unsigned *major, unsigned *minor)
{
	unsigned v[2] = {0, 0};
	for (int part = 0; part < 2; part++) {
		const char *start = s;
		while (*s >= '0' && *s <= '9') {
			if (v[part] > 99999)
				return -1;
			v[part] = v[part] * 10 + (unsigned)(*s - '0');
			s++;
		}
		if (s == start)
			return -1;
		if (part == 0 && *s++ != '.')
			return -1;
	}
	if (*s)
		return -1;
	*major = v[0];
	*minor = v[1];
	return 0;
}

/* A whole regular file into a malloc'd buffer (NUL-terminated, for JSON).
 * `what` names the file in messages ("bundle", "plugin"). */
static int read_file(const char *path, const char *what, size_t max, char **data, size_t *len,
		     char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(PLANT_E_IO, err, errlen, "%s %s: %s", what, path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return fail(PLANT_E_IO, err, errlen, "%s %s: %s", what, path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fail(PLANT_E_IO, err, errlen, "%s %s: not a regular file", what, path);
	}
	if ((uintmax_t)st.st_size > max) {
		close(fd);
		return fail(PLANT_E_INVALID, err, errlen,
			    "%s %s: %jd bytes, more than the %zu allowed", what, path,
			    (intmax_t)st.st_size, max);
	}
	size_t size = (size_t)st.st_size, n = 0;
	char *buf = malloc(size + 1);
	if (!buf) {
		close(fd);
		return fail(PLANT_E_NOMEM, err, errlen, "%s %s: out of memory", what, path);
	}
	/* up to the size fstat() gave, then one byte more to see the end */
	char probe;
	for (;;) {
		ssize_t r = n < size ? read(fd, buf + n, size - n) : read(fd, &probe, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(buf);
			close(fd);
			return fail(PLANT_E_IO, err, errlen, "%s %s: %s", what, path, strerror(e));
		}
		if (r == 0)
			break;
		if (n == size) {
			free(buf);
			close(fd);
			return fail(PLANT_E_IO, err, errlen, "%s %s: changed while being read",
				    what, path);
		}
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return PLANT_OK;
}

/* ---- keys ---------------------------------------------------------------------- */

/* Never prompt on a terminal for an encrypted key: fail instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

enum key_kind { KEY_PUBLIC, KEY_PRIVATE, KEY_EITHER };

/* An ed25519 key from a PEM file. `role` names it in messages ("trusted
 * key", "signing key"). */
static int read_key(const char *file, enum key_kind kind, const char *role, EVP_PKEY **out,
		    char *err, size_t errlen)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return fail(PLANT_E_CONFIG, err, errlen, "%s %s: %s", role, file, strerror(errno));
	EVP_PKEY *k = NULL;
	if (kind != KEY_PRIVATE)
		k = PEM_read_PUBKEY(f, NULL, no_passphrase, NULL);
	if (!k && kind != KEY_PUBLIC) {
		rewind(f);
		k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	}
	fclose(f);
	ERR_clear_error();
	if (!k)
		return fail(PLANT_E_CONFIG, err, errlen, "%s %s: not a PEM %s key%s", role, file,
			    kind == KEY_PUBLIC	  ? "public"
			    : kind == KEY_PRIVATE ? "private"
						  : "public or private",
			    kind == KEY_PUBLIC ? "" : " (or one protected by a passphrase)");
	if (EVP_PKEY_id(k) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(k);
		return fail(PLANT_E_CONFIG, err, errlen, "%s %s: not an ed25519 key", role, file);
	}
	*out = k;
	return PLANT_OK;
}

static int key_id_of(EVP_PKEY *k, char key_id[KEY_ID_HEX + 1])
{
	unsigned char raw[ED25519_KEY];
	size_t rawlen = sizeof raw;
	char full[SHA256_HEX + 1];
	if (EVP_PKEY_get_raw_public_key(k, raw, &rawlen) != 1 || rawlen != ED25519_KEY) {
		ERR_clear_error();
		return -1;
	}
	if (sha256_hex(raw, rawlen, full) != 0)
		return -1;
	memcpy(key_id, full, KEY_ID_HEX);
	key_id[KEY_ID_HEX] = '\0';
	return 0;
}

int bundle_key_file_id(const char *key_file, char key_id[17], char *err, size_t errlen)
{
	EVP_PKEY *k;
	int rc = read_key(key_file, KEY_EITHER, "key", &k, err, errlen);
	if (rc)
		return rc;
	rc = key_id_of(k, key_id);
	EVP_PKEY_free(k);
	if (rc)
		return fail(PLANT_E_CONFIG, err, errlen, "key %s: cannot read its public key",
			    key_file);
	return PLANT_OK;
}

static char *canonical_manifest(const json_t *manifest)
{
	return json_dumps(manifest, JSON_COMPACT | JSON_SORT_KEYS);
}

/* ---- reading --------------------------------------------------------------------- */

void bundle_free(struct bundle *b)
{
	if (!b)
		return;
	free(b->origin);
	free(b->canonical);
	json_decref(b->manifest);
	free(b->module);
	free(b);
}

/* manifest.KEY as a non-empty string. */
static int manifest_string(struct bundle *b, const char *key, const char **out, char *err,
			   size_t errlen)
{
	const json_t *v = json_object_get(b->manifest, key);
	if (!v)
		return fail(PLANT_E_INVALID, err, errlen, "bundle %s: manifest has no \"%s\"",
			    b->origin, key);
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: manifest \"%s\" must be a non-empty string", b->origin,
			    key);
	*out = json_string_value(v);
	return PLANT_OK;
}

static int parse_manifest(struct bundle *b, char *err, size_t errlen)
{
	int rc;
	const char *sha, *created;
	if ((rc = manifest_string(b, "name", &b->name, err, errlen)) ||
	    (rc = manifest_string(b, "version", &b->version, err, errlen)) ||
	    (rc = manifest_string(b, "abi", &b->abi, err, errlen)) ||
	    (rc = manifest_string(b, "sha256", &sha, err, errlen)))
		return rc;
	if (!file_part_ok(b->name))
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: manifest name \"%s\" is not a module name (" FILE_PART_RULE
			    ")",
			    b->origin, b->name);
	if (!file_part_ok(b->version))
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: manifest version \"%s\" is not usable (" FILE_PART_RULE ")",
			    b->origin, b->version);
	if (parse_abi(b->abi, &b->abi_major, &b->abi_minor) != 0)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: manifest abi \"%s\" is not MAJOR.MINOR (e.g. \"1.6\")",
			    b->origin, b->abi);
	if (hex_lower(sha, SHA256_HEX, b->sha256) != 0)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: manifest sha256 \"%s\" is not 64 hex digits", b->origin,
			    sha);
	const json_t *size = json_object_get(b->manifest, "size");
	if (!size)
		return fail(PLANT_E_INVALID, err, errlen, "bundle %s: manifest has no \"size\"",
			    b->origin);
	if (!json_is_integer(size) || json_integer_value(size) < 1 ||
	    (uintmax_t)json_integer_value(size) > MODULE_MAX_BYTES)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: manifest size must be a number of bytes from 1 to %zu",
			    b->origin, (size_t)MODULE_MAX_BYTES);
	b->size = (size_t)json_integer_value(size);
	b->config = json_object_get(b->manifest, "config");
	if (b->config && !json_is_object(b->config))
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: manifest config must be an object (settings)", b->origin);
	if (json_object_get(b->manifest, "created") &&
	    (rc = manifest_string(b, "created", &created, err, errlen)))
		return rc;
	return PLANT_OK;
}

static int parse_signature(struct bundle *b, const json_t *sig, char *err, size_t errlen)
{
	if (!json_is_object(sig))
		return fail(PLANT_E_INVALID, err, errlen, "bundle %s: signature must be an object",
			    b->origin);
	const char *alg = json_string_value(json_object_get(sig, "alg"));
	const char *key_id = json_string_value(json_object_get(sig, "key_id"));
	const char *text = json_string_value(json_object_get(sig, "sig"));
	if (!alg || !key_id || !text)
		return fail(
			PLANT_E_INVALID, err, errlen,
			"bundle %s: signature needs the strings \"alg\", \"key_id\" and \"sig\"",
			b->origin);
	if (strcmp(alg, "ed25519") != 0)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: signature algorithm \"%s\" is not supported (only ed25519)",
			    b->origin, alg);
	if (hex_lower(key_id, KEY_ID_HEX, b->key_id) != 0)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: signature key_id \"%s\" is not 16 hex digits", b->origin,
			    key_id);
	unsigned char *raw;
	size_t rawlen;
	int r = b64_decode(text, strlen(text), &raw, &rawlen);
	if (r == -2)
		return fail(PLANT_E_NOMEM, err, errlen, "bundle %s: out of memory", b->origin);
	if (r != 0 || rawlen != ED25519_SIG) {
		if (r == 0)
			free(raw);
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: signature sig is not the base64 of %d bytes", b->origin,
			    ED25519_SIG);
	}
	memcpy(b->sig, raw, ED25519_SIG);
	free(raw);
	b->has_sig = 1;
	return PLANT_OK;
}

static int parse_module(struct bundle *b, const json_t *module, char *err, size_t errlen)
{
	if (!module)
		return fail(PLANT_E_INVALID, err, errlen, "bundle %s: no \"module\"", b->origin);
	if (!json_is_string(module))
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: \"module\" must be a base64 string", b->origin);
	int r = b64_decode(json_string_value(module), json_string_length(module), &b->module,
			   &b->module_len);
	if (r == -2)
		return fail(PLANT_E_NOMEM, err, errlen, "bundle %s: out of memory", b->origin);
	if (r != 0)
		return fail(
			PLANT_E_INVALID, err, errlen,
			"bundle %s: \"module\" is not valid base64 (padded, without line breaks)",
			b->origin);
	if (b->module_len != b->size)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: module is %zu bytes, manifest says %zu", b->origin,
			    b->module_len, b->size);
	char actual[SHA256_HEX + 1];
	if (sha256_hex(b->module, b->module_len, actual) != 0)
		return fail(PLANT_E_NOMEM, err, errlen, "bundle %s: cannot compute sha256",
			    b->origin);
	if (strcmp(actual, b->sha256) != 0)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: sha256 mismatch: manifest says %s, module is %s", b->origin,
			    b->sha256, actual);
	return PLANT_OK;
}

int bundle_parse(const char *data, size_t len, const char *origin, struct bundle **out, char *err,
		 size_t errlen)
{
	if (!origin)
		origin = "(memory)";
	if (len > BUNDLE_MAX_BYTES)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: %zu bytes, more than the %zu a bundle may have", origin,
			    len, BUNDLE_MAX_BYTES);
	struct bundle *b = calloc(1, sizeof *b);
	if (!b || !(b->origin = strdup(origin))) {
		free(b);
		return fail(PLANT_E_NOMEM, err, errlen, "bundle %s: out of memory", origin);
	}
	json_error_t jerr;
	json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	int rc;
	if (!root) {
#if JANSSON_VERSION_HEX >= 0x020e00
		if (json_error_code(&jerr) == json_error_out_of_memory)
			rc = fail(PLANT_E_NOMEM, err, errlen, "bundle %s: out of memory", origin);
		else
#endif
			rc = fail(PLANT_E_INVALID, err, errlen,
				  "bundle %s: not JSON: %s (line %d, column %d)", origin, jerr.text,
				  jerr.line, jerr.column);
		goto out;
	}
	if (!json_is_object(root)) {
		rc = fail(PLANT_E_INVALID, err, errlen, "bundle %s: not a JSON object", origin);
		goto out;
	}
	const json_t *format = json_object_get(root, "format");
	if (!format) {
		rc = fail(PLANT_E_INVALID, err, errlen,
			  "bundle %s: no \"format\" member: not a plantd bundle", origin);
		goto out;
	}
	if (!json_is_string(format) || strcmp(json_string_value(format), BUNDLE_FORMAT) != 0) {
		rc = fail(PLANT_E_INVALID, err, errlen,
			  "bundle %s: format %s is not supported (this plantd reads \"%s\")",
			  origin,
			  json_is_string(format) ? json_string_value(format) : "(not a string)",
			  BUNDLE_FORMAT);
		goto out;
	}
	json_t *manifest = json_object_get(root, "manifest");
	if (!json_is_object(manifest)) {
		rc = fail(PLANT_E_INVALID, err, errlen, "bundle %s: %s", origin,
			  manifest ? "\"manifest\" must be an object" : "no \"manifest\"");
		goto out;
	}
	b->manifest = json_incref(manifest);
	if ((rc = parse_manifest(b, err, errlen)))
		goto out;
	const json_t *sig = json_object_get(root, "signature");
	if (sig && (rc = parse_signature(b, sig, err, errlen)))
		goto out;
	/* Made once here: bundle_verify() then reads nothing but this, so
	 * threads may share the bundle whatever jansson does when dumping. */
	if (b->has_sig && !(b->canonical = canonical_manifest(b->manifest))) {
		rc = fail(PLANT_E_NOMEM, err, errlen, "bundle %s: out of memory", origin);
		goto out;
	}
	if ((rc = parse_module(b, json_object_get(root, "module"), err, errlen)))
		goto out;
	*out = b;
	b = NULL;
out:
	json_decref(root);
	bundle_free(b);
	return rc;
}

int bundle_read(const char *path, struct bundle **out, char *err, size_t errlen)
{
	char *data;
	size_t len;
	int rc = read_file(path, "bundle", BUNDLE_MAX_BYTES, &data, &len, err, errlen);
	if (rc)
		return rc;
	rc = bundle_parse(data, len, path, out, err, errlen);
	free(data);
	return rc;
}

const json_t *bundle_manifest(const struct bundle *b)
{
	return b->manifest;
}

const char *bundle_origin(const struct bundle *b)
{
	return b->origin;
}

const char *bundle_name(const struct bundle *b)
{
	return b->name;
}

const char *bundle_version(const struct bundle *b)
{
	return b->version;
}

const char *bundle_abi(const struct bundle *b)
{
	return b->abi;
}

const char *bundle_sha256(const struct bundle *b)
{
	return b->sha256;
}

size_t bundle_size(const struct bundle *b)
{
	return b->module_len;
}

const json_t *bundle_config(const struct bundle *b)
{
	return b->config;
}

int bundle_signed(const struct bundle *b)
{
	return b->has_sig;
}

const char *bundle_key_id(const struct bundle *b)
{
	return b->has_sig ? b->key_id : NULL;
}

const unsigned char *bundle_module(const struct bundle *b, size_t *len)
{
	if (len)
		*len = b->module_len;
	return b->module;
}

/* ---- checks ------------------------------------------------------------------------ */

int bundle_check_abi(const struct bundle *b, char *err, size_t errlen)
{
	if (b->abi_major != PLANT_ABI_MAJOR || b->abi_minor > PLANT_ABI_MINOR)
		return fail(PLANT_E_ABI, err, errlen,
			    "bundle %s: module %s built for SDK %u.%u, host provides %d.%d",
			    b->origin, b->name, b->abi_major, b->abi_minor, PLANT_ABI_MAJOR,
			    PLANT_ABI_MINOR);
	return PLANT_OK;
}

static int verify_with(const struct bundle *b, EVP_PKEY *k, char *err, size_t errlen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		return fail(PLANT_E_NOMEM, err, errlen, "bundle %s: out of memory", b->origin);
	int ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) == 1 &&
		 EVP_DigestVerify(ctx, b->sig, sizeof b->sig, (const unsigned char *)b->canonical,
				  strlen(b->canonical)) == 1;
	ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: bad signature by key %s (the manifest was changed after "
			    "signing, or another key signed it)",
			    b->origin, b->key_id);
	return PLANT_OK;
}

int bundle_verify(const struct bundle *b, const char *const *trusted_key_files, size_t n_keys,
		  int required, char *err, size_t errlen)
{
	if (!b->has_sig) {
		if (required)
			return fail(PLANT_E_INVALID, err, errlen,
				    "bundle %s is not signed and the site requires signatures",
				    b->origin);
		return PLANT_OK;
	}
	if (n_keys == 0) {
		if (required)
			return fail(PLANT_E_CONFIG, err, errlen,
				    "bundle %s: the site requires signatures but trusts no keys",
				    b->origin);
		return PLANT_OK; /* nothing to check it against */
	}
	/* Every key file is read, not only up to the one that matches: a
	 * broken trusted key is a configuration error whichever bundle
	 * comes. */
	EVP_PKEY *match = NULL;
	char known[512] = "";
	size_t known_len = 0;
	for (size_t i = 0; i < n_keys; i++) {
		EVP_PKEY *k;
		char id[KEY_ID_HEX + 1];
		int rc = read_key(trusted_key_files[i], KEY_PUBLIC, "trusted key", &k, err, errlen);
		if (rc) {
			EVP_PKEY_free(match);
			return rc;
		}
		if (key_id_of(k, id) != 0) {
			EVP_PKEY_free(k);
			EVP_PKEY_free(match);
			return fail(PLANT_E_CONFIG, err, errlen,
				    "trusted key %s: cannot read its public key",
				    trusted_key_files[i]);
		}
		if (!match && strcmp(id, b->key_id) == 0) {
			match = k;
		} else {
			EVP_PKEY_free(k);
		}
		if (known_len < sizeof known) {
			int n = snprintf(known + known_len, sizeof known - known_len, "%s%s in %s",
					 i ? ", " : "", id, trusted_key_files[i]);
			if (n > 0)
				known_len += (size_t)n;
		}
	}
	if (!match)
		return fail(
			PLANT_E_INVALID, err, errlen,
			"bundle %s is signed by key %s, which is not among the trusted keys (%s)",
			b->origin, b->key_id, known);
	int rc = verify_with(b, match, err, errlen);
	EVP_PKEY_free(match);
	return rc;
}

/* ---- writing ------------------------------------------------------------------------- */

/* mkdir -p, 0755. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
	char *p = strdup(dir);
	if (!p)
		return fail(PLANT_E_NOMEM, err, errlen, "out of memory");
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST) {
			int e = errno;
			fail(PLANT_E_IO, err, errlen, "cannot make directory %s: %s", p,
			     strerror(e));
			free(p);
			return PLANT_E_IO;
		}
		*s = '/';
	}
	free(p);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return fail(PLANT_E_IO, err, errlen, "cannot make directory %s: %s", dir,
			    strerror(errno));
	struct stat st;
	if (stat(dir, &st) != 0)
		return fail(PLANT_E_IO, err, errlen, "directory %s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(PLANT_E_IO, err, errlen, "%s is not a directory", dir);
	return PLANT_OK;
}

/* Does `path` hold exactly these bytes? */
static int same_content(const char *path, const unsigned char *data, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct stat st;
	int same = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uintmax_t)st.st_size == len;
	unsigned char buf[65536];
	size_t off = 0;
	while (same && off < len) {
		ssize_t r = read(fd, buf, sizeof buf);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || (size_t)r > len - off || memcmp(buf, data + off, (size_t)r) != 0)
			same = 0;
		else
			off += (size_t)r;
	}
	close(fd);
	return same;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int bundle_write_module(const struct bundle *b, const char *dir, char *path_out, size_t len,
			char *err, size_t errlen)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	int n = snprintf(path, sizeof path, "%s/%s-%s-%.*s.so", dir, b->name, b->version,
			 SHA_IN_NAME, b->sha256);
	int t = snprintf(tmp, sizeof tmp, "%s/.%s-%s-%.*s.so.XXXXXX", dir, b->name, b->version,
			 SHA_IN_NAME, b->sha256);
	if (n < 0 || (size_t)n >= sizeof path || (size_t)n >= len || t < 0 ||
	    (size_t)t >= sizeof tmp)
		return fail(PLANT_E_INVALID, err, errlen,
			    "bundle %s: the module's file name in %s is too long", b->origin, dir);
	int rc = make_dirs(dir, err, errlen);
	if (rc)
		return rc;
	if (same_content(path, b->module, b->module_len)) {
		memcpy(path_out, path, (size_t)n + 1);
		return PLANT_OK;
	}
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return fail(PLANT_E_IO, err, errlen, "cannot write module %s: %s", path,
			    strerror(errno));
	if (fchmod(fd, 0644) != 0 || write_all(fd, b->module, b->module_len) != 0 ||
	    fsync(fd) != 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		return fail(PLANT_E_IO, err, errlen, "cannot write module %s: %s", tmp,
			    strerror(e));
	}
	if (close(fd) != 0 || rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return fail(PLANT_E_IO, err, errlen, "cannot write module %s: %s", path,
			    strerror(e));
	}
	/* the rename itself is durable once the directory is synced */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	memcpy(path_out, path, (size_t)n + 1);
	return PLANT_OK;
}

/* ---- packing --------------------------------------------------------------------------- */

/* The descriptor's module name and version, and its ABI as "MAJOR.MINOR"
 * (all malloc'd). Only a descriptor of this major is read past its first
 * four members, the only ones every major shares. */
static int read_descriptor(const char *so_path, char **name, char **version, char **abi, char *err,
			   size_t errlen)
{
	char local[PATH_MAX];
	const char *file = so_path;
	if (!strchr(so_path, '/')) { /* dlopen() would search the library path */
		int n = snprintf(local, sizeof local, "./%s", so_path);
		if (n < 0 || (size_t)n >= sizeof local)
			return fail(PLANT_E_INVALID, err, errlen, "plugin %s: name too long",
				    so_path);
		file = local;
	}
	dlerror();
	void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *why = dlerror();
		return fail(PLANT_E_INVALID, err, errlen,
			    "plugin %s: not a loadable shared object: %s", so_path,
			    why ? why : "unknown reason");
	}
	const struct plant_plugin_desc *d = dlsym(h, PLANT_PLUGIN_DESC_NAME);
	for (int major = 0; major < 10 && !d; major++) {
		char sym[32];
		snprintf(sym, sizeof sym, "plant_plugin_v%d", major);
		if (major != PLANT_ABI_MAJOR)
			d = dlsym(h, sym);
	}
	int rc = PLANT_OK;
	if (!d) {
		rc = fail(PLANT_E_INVALID, err, errlen,
			  "plugin %s: no plantd descriptor (symbol %s not found); is it a plantd "
			  "plugin?",
			  so_path, PLANT_PLUGIN_DESC_NAME);
	} else if (d->abi_major != PLANT_ABI_MAJOR) {
		rc = fail(PLANT_E_ABI, err, errlen,
			  "plugin %s built for SDK %u.%u; this plantd-bundle reads SDK %d.x "
			  "descriptors only",
			  so_path, d->abi_major, d->abi_minor, PLANT_ABI_MAJOR);
	} else if (d->struct_size <
		   offsetof(struct plant_plugin_desc, version) + sizeof(d->version)) {
		rc = fail(PLANT_E_INVALID, err, errlen,
			  "plugin %s: descriptor size %u is too small to hold a name and version",
			  so_path, d->struct_size);
	} else if (!d->name || !file_part_ok(d->name)) {
		rc = fail(PLANT_E_INVALID, err, errlen,
			  "plugin %s: descriptor module name %s%s%s is not usable (" FILE_PART_RULE
			  ")",
			  so_path, d->name ? "\"" : "", d->name ? d->name : "(none)",
			  d->name ? "\"" : "");
	} else if (!d->version || !file_part_ok(d->version)) {
		rc = fail(PLANT_E_INVALID, err, errlen,
			  "plugin %s: descriptor version %s%s%s is not usable for a bundle "
			  "(" FILE_PART_RULE ")",
			  so_path, d->version ? "\"" : "", d->version ? d->version : "(none)",
			  d->version ? "\"" : "");
	} else {
		char buf[32];
		snprintf(buf, sizeof buf, "%u.%u", d->abi_major, d->abi_minor);
		*name = strdup(d->name);
		*version = strdup(d->version);
		*abi = strdup(buf);
		if (!*name || !*version || !*abi) {
			free(*name);
			free(*version);
			free(*abi);
			rc = fail(PLANT_E_NOMEM, err, errlen, "out of memory");
		}
	}
	/* as loader_close: keep it mapped for leak reports under ASan/valgrind */
	if (!getenv("PLANTD_NO_DLCLOSE"))
		dlclose(h);
	return rc;
}

static int created_now(char out[32], char *err, size_t errlen)
{
	time_t t = time(NULL);
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	if (sde && *sde) {
		char *end;
		errno = 0;
		long long v = strtoll(sde, &end, 10);
		if (errno || *end || v < 0)
			return fail(PLANT_E_INVALID, err, errlen,
				    "SOURCE_DATE_EPOCH \"%s\" is not a number of seconds", sde);
		t = (time_t)v;
	}
	struct tm tm;
	if (!gmtime_r(&t, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return fail(PLANT_E_INVALID, err, errlen, "cannot format the time");
	return PLANT_OK;
}

/* A [new] signature object for the manifest. */
static int sign_manifest(const json_t *manifest, const char *key_file, json_t **out, char *err,
			 size_t errlen)
{
	EVP_PKEY *k;
	int rc = read_key(key_file, KEY_PRIVATE, "signing key", &k, err, errlen);
	if (rc)
		return rc;
	char key_id[KEY_ID_HEX + 1];
	unsigned char sig[ED25519_SIG];
	size_t siglen = sizeof sig;
	char *tbs = canonical_manifest(manifest);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char *sig64 = NULL;
	if (!tbs || !ctx) {
		rc = fail(PLANT_E_NOMEM, err, errlen, "out of memory");
	} else if (key_id_of(k, key_id) != 0 || EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) != 1 ||
		   EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)tbs, strlen(tbs)) !=
			   1 ||
		   siglen != ED25519_SIG) {
		rc = fail(PLANT_E_CONFIG, err, errlen, "signing key %s: cannot sign with it",
			  key_file);
	} else if (!(sig64 = b64_encode(sig, siglen)) ||
		   !(*out = json_pack("{s:s, s:s, s:s}", "alg", "ed25519", "key_id", key_id, "sig",
				      sig64))) {
		rc = fail(PLANT_E_NOMEM, err, errlen, "out of memory");
	}
	ERR_clear_error();
	free(sig64);
	EVP_MD_CTX_free(ctx);
	free(tbs);
	EVP_PKEY_free(k);
	return rc;
}

int bundle_pack(const char *so_path, const json_t *config, const char *sign_key_file, json_t **out,
		char *err, size_t errlen)
{
	if (config && !json_is_object(config))
		return fail(PLANT_E_INVALID, err, errlen,
			    "a bundle's config must be a JSON object (settings)");
	char *data = NULL, *name = NULL, *version = NULL, *abi = NULL, *module64 = NULL;
	json_t *manifest = NULL, *sig = NULL, *root = NULL;
	char sha[SHA256_HEX + 1], created[32];
	size_t len;
	int rc = read_file(so_path, "plugin", MODULE_MAX_BYTES, &data, &len, err, errlen);
	if (rc)
		return rc;
	if (len == 0) {
		rc = fail(PLANT_E_INVALID, err, errlen, "plugin %s: empty file", so_path);
		goto out;
	}
	if ((rc = read_descriptor(so_path, &name, &version, &abi, err, errlen)) ||
	    (rc = created_now(created, err, errlen)))
		goto out;
	if (sha256_hex((const unsigned char *)data, len, sha) != 0 ||
	    !(module64 = b64_encode((const unsigned char *)data, len)) ||
	    !(manifest = json_pack("{s:s, s:s, s:s, s:s, s:I}", "name", name, "version", version,
				   "abi", abi, "sha256", sha, "size", (json_int_t)len)) ||
	    (config && json_object_set_new(manifest, "config", json_deep_copy(config)) != 0) ||
	    json_object_set_new(manifest, "created", json_string(created)) != 0) {
		rc = fail(PLANT_E_NOMEM, err, errlen, "out of memory");
		goto out;
	}
	if (sign_key_file && (rc = sign_manifest(manifest, sign_key_file, &sig, err, errlen)))
		goto out;
	root = json_pack("{s:s, s:O}", "format", BUNDLE_FORMAT, "manifest", manifest);
	if (!root || (sig && json_object_set(root, "signature", sig) != 0) ||
	    json_object_set_new(root, "module", json_string(module64)) != 0) {
		rc = fail(PLANT_E_NOMEM, err, errlen, "out of memory");
		goto out;
	}
	*out = root;
	root = NULL;
out:
	json_decref(root);
	json_decref(sig);
	json_decref(manifest);
	free(module64);
	free(abi);
	free(version);
	free(name);
	free(data);
	return rc;
}
