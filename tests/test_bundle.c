/* bundle: packing a fixture module, reading it back, every refusal of a
 * bad bundle, ed25519 signatures with keys made here, and writing the
 * module out. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "bundle.h"
#include "loader.h"
#include "testutil.h"

static char good_so[PATH_MAX];
static char fixture_dir[PATH_MAX];
static char errbuf[1024];

/* Keys made for this run: A and B are ed25519, ec is a P-256 key (not
 * ed25519). */
static char *key_dir;
static char priv_a[PATH_MAX], pub_a[PATH_MAX], priv_b[PATH_MAX], pub_b[PATH_MAX];
static char pub_ec[PATH_MAX];

/* ---- helpers -------------------------------------------------------------------- */

static void write_key(EVP_PKEY *k, const char *path, int private)
{
	FILE *f = fopen(path, "w");
	if (!f)
		fail_msg("fopen %s: %s", path, strerror(errno));
	int ok = private ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)
			 : PEM_write_PUBKEY(f, k);
	fclose(f);
	if (ok != 1)
		fail_msg("cannot write key %s", path);
}

static EVP_PKEY *keygen(int id)
{
	EVP_PKEY *k = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(id, NULL);
	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	if (id == EVP_PKEY_EC)
		assert_int_equal(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx, NID_X9_62_prime256v1),
				 1);
	assert_int_equal(EVP_PKEY_keygen(ctx, &k), 1);
	EVP_PKEY_CTX_free(ctx);
	return k;
}

static void make_pair(const char *name, char *priv, char *pub)
{
	EVP_PKEY *k = keygen(EVP_PKEY_ED25519);
	char file[64];
	tu_fmt(file, sizeof file, "%s.pem", name);
	tu_join(priv, PATH_MAX, key_dir, file);
	tu_fmt(file, sizeof file, "%s.pub.pem", name);
	tu_join(pub, PATH_MAX, key_dir, file);
	write_key(k, priv, 1);
	write_key(k, pub, 0);
	EVP_PKEY_free(k);
}

static int setup_all(void **state)
{
	(void)state;
	tu_fmt(fixture_dir, sizeof fixture_dir, "%s", tu_env("PLANTD_FIXTURE_DIR"));
	tu_join(good_so, sizeof good_so, fixture_dir, "fx_good.so");
	key_dir = tu_mkdtemp();
	make_pair("a", priv_a, pub_a);
	make_pair("b", priv_b, pub_b);
	EVP_PKEY *ec = keygen(EVP_PKEY_EC);
	tu_join(pub_ec, sizeof pub_ec, key_dir, "ec.pub.pem");
	write_key(ec, pub_ec, 0);
	EVP_PKEY_free(ec);
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	tu_rmtree(key_dir);
	free(key_dir);
	return 0;
}

static char *file_bytes(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("fopen %s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void sha256_of(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	assert_int_equal(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL), 1);
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The fixture packed, as JSON [new]. */
static json_t *pack_good(const json_t *config, const char *key)
{
	json_t *root = NULL;
	errbuf[0] = '\0';
	int rc = bundle_pack(good_so, config, key, &root, errbuf, sizeof errbuf);
	if (rc != PLANT_OK)
		fail_msg("bundle_pack(%s): %s", good_so, errbuf);
	return root;
}

/* Parse `root` as if read from "test.bundle". */
static int parse_json(const json_t *root, struct bundle **out)
{
	char *text = json_dumps(root, JSON_COMPACT);
	assert_non_null(text);
	errbuf[0] = '\0';
	int rc = bundle_parse(text, strlen(text), "test.bundle", out, errbuf, sizeof errbuf);
	free(text);
	return rc;
}

static struct bundle *parse_ok(const json_t *root)
{
	struct bundle *b = NULL;
	if (parse_json(root, &b) != PLANT_OK)
		fail_msg("bundle_parse: %s", errbuf);
	assert_non_null(b);
	return b;
}

/* Parsing `root` fails with `rc` and a message holding `needle`. */
static void parse_fails(const json_t *root, int rc, const char *needle)
{
	struct bundle *b = NULL;
	int got = parse_json(root, &b);
	if (got == PLANT_OK) {
		bundle_free(b);
		fail_msg("bundle_parse succeeded; expected \"%s\"", needle);
	}
	assert_null(b);
	assert_int_equal(got, rc);
	assert_contains(errbuf, "test.bundle");
	assert_contains(errbuf, needle);
}

static void parse_text_fails(const char *text, const char *needle)
{
	struct bundle *b = NULL;
	errbuf[0] = '\0';
	assert_int_equal(bundle_parse(text, strlen(text), "test.bundle", &b, errbuf, sizeof errbuf),
			 PLANT_E_INVALID);
	assert_null(b);
	assert_contains(errbuf, "test.bundle");
	assert_contains(errbuf, needle);
}

static json_t *manifest_of(json_t *root)
{
	json_t *m = json_object_get(root, "manifest");
	assert_non_null(m);
	return m;
}

/* ---- round trip ---------------------------------------------------------------- */

static void test_round_trip(void **state)
{
	(void)state;
	size_t len;
	char *bytes = file_bytes(good_so, &len);
	char sha[65];
	sha256_of(bytes, len, sha);

	json_t *config = json_pack("{s:I, s:s}", "count", (json_int_t)3, "label", "x");
	json_t *root = pack_good(config, NULL);
	assert_string_equal(json_string_value(json_object_get(root, "format")), BUNDLE_FORMAT);
	assert_null(json_object_get(root, "signature"));
	const char *created = json_string_value(json_object_get(manifest_of(root), "created"));
	assert_non_null(created);
	assert_int_equal(strlen(created), strlen("2025-01-31T12:00:00Z"));
	assert_int_equal(created[strlen(created) - 1], 'Z');

	struct bundle *b = parse_ok(root);
	char abi[32];
	tu_fmt(abi, sizeof abi, "%d.%d", PLANT_ABI_MAJOR, PLANT_ABI_MINOR);
	assert_string_equal(bundle_name(b), "fx_good");
	assert_string_equal(bundle_version(b), "0.0.1");
	assert_string_equal(bundle_abi(b), abi);
	assert_string_equal(bundle_sha256(b), sha);
	assert_string_equal(bundle_origin(b), "test.bundle");
	assert_int_equal(bundle_size(b), len);
	assert_true(json_equal((json_t *)bundle_config(b), config));
	assert_int_equal(bundle_signed(b), 0);
	assert_null(bundle_key_id(b));
	size_t mlen;
	const unsigned char *mod = bundle_module(b, &mlen);
	assert_int_equal(mlen, len);
	assert_memory_equal(mod, bytes, len);
	assert_true(json_equal((json_t *)bundle_manifest(b), manifest_of(root)));

	assert_int_equal(bundle_check_abi(b, errbuf, sizeof errbuf), PLANT_OK);
	/* unsigned, not required: fine, with keys or without */
	assert_int_equal(bundle_verify(b, NULL, 0, 0, errbuf, sizeof errbuf), PLANT_OK);
	const char *keys[] = {pub_a};
	assert_int_equal(bundle_verify(b, keys, 1, 0, errbuf, sizeof errbuf), PLANT_OK);
	bundle_free(b);
	json_decref(root);

	/* no config: no "config" member, bundle_config() NULL */
	root = pack_good(NULL, NULL);
	assert_null(json_object_get(manifest_of(root), "config"));
	b = parse_ok(root);
	assert_null(bundle_config(b));
	bundle_free(b);
	json_decref(root);
	json_decref(config);
	free(bytes);
}

/* What bundle_pack writes, through a file, reads back the same. */
static void test_read_file(void **state)
{
	(void)state;
	char *dir = tu_mkdtemp();
	char path[PATH_MAX];
	tu_join(path, sizeof path, dir, "fx_good-0.0.1.bundle");
	json_t *root = pack_good(NULL, priv_a);
	assert_int_equal(json_dump_file(root, path, JSON_INDENT(2)), 0);
	struct bundle *b = NULL;
	assert_int_equal(bundle_read(path, &b, errbuf, sizeof errbuf), PLANT_OK);
	assert_string_equal(bundle_origin(b), path);
	assert_int_equal(bundle_signed(b), 1);
	const char *keys[] = {pub_a};
	assert_int_equal(bundle_verify(b, keys, 1, 1, errbuf, sizeof errbuf), PLANT_OK);
	bundle_free(b);

	/* a missing file and a directory: PLANT_E_IO naming the file */
	char missing[PATH_MAX];
	tu_join(missing, sizeof missing, dir, "nope.bundle");
	b = NULL;
	assert_int_equal(bundle_read(missing, &b, errbuf, sizeof errbuf), PLANT_E_IO);
	assert_null(b);
	assert_contains(errbuf, missing);
	assert_contains(errbuf, "No such file");
	assert_int_equal(bundle_read(dir, &b, errbuf, sizeof errbuf), PLANT_E_IO);
	assert_contains(errbuf, "not a regular file");

	json_decref(root);
	tu_rmtree(dir);
	free(dir);
}

/* ---- refusals ------------------------------------------------------------------- */

static void test_sha256_mismatch(void **state)
{
	(void)state;
	json_t *root = pack_good(NULL, NULL);
	const char *text = json_string_value(json_object_get(root, "module"));
	size_t n = strlen(text);
	unsigned char *raw = malloc(n);
	assert_non_null(raw);
	int len = EVP_DecodeBlock(raw, (const unsigned char *)text, (int)n);
	assert_true(len > 100);
	while (n > 0 && text[n - 1] == '=') { /* DecodeBlock counts padding */
		len--;
		n--;
	}
	raw[len / 2] ^= 0x01; /* one bit of one byte */
	char actual[65];
	sha256_of(raw, (size_t)len, actual);
	char *tampered = malloc(((size_t)len + 2) / 3 * 4 + 1);
	assert_non_null(tampered);
	EVP_EncodeBlock((unsigned char *)tampered, raw, len);
	json_object_set_new(root, "module", json_string(tampered));

	char want[256];
	tu_fmt(want, sizeof want, "sha256 mismatch: manifest says %s, module is %s",
	       json_string_value(json_object_get(manifest_of(root), "sha256")), actual);
	parse_fails(root, PLANT_E_INVALID, want);

	/* a module of another length is caught by its size first */
	json_object_set_new(root, "module", json_string("QUJD"));
	parse_fails(root, PLANT_E_INVALID, "module is 3 bytes, manifest says");

	free(tampered);
	free(raw);
	json_decref(root);
}

static void test_bad_base64(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"QUJ",		/* not a multiple of 4 */
		"QU!D",		/* not in the alphabet */
		"QU=D",		/* padding in the middle */
		"Q===",		/* three padding characters */
		"QUJD\nREVG",	/* a line break */
		" QUJD",	/* a blank: DecodeBlock alone would take it */
		"QUJDREVG====", /* padding beyond the block */
	};
	json_t *root = pack_good(NULL, NULL);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_object_set_new(root, "module", json_string(bad[i]));
		parse_fails(root, PLANT_E_INVALID, "\"module\" is not valid base64");
	}
	json_object_set_new(root, "module", json_integer(1));
	parse_fails(root, PLANT_E_INVALID, "\"module\" must be a base64 string");
	json_object_del(root, "module");
	parse_fails(root, PLANT_E_INVALID, "no \"module\"");
	json_decref(root);
}

static void test_missing_and_bad_fields(void **state)
{
	(void)state;
	static const char *const required[] = {"name", "version", "abi", "sha256", "size"};
	json_t *orig = pack_good(NULL, NULL);
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
		json_t *root = json_deep_copy(orig);
		json_object_del(manifest_of(root), required[i]);
		char want[64];
		tu_fmt(want, sizeof want, "manifest has no \"%s\"", required[i]);
		parse_fails(root, PLANT_E_INVALID, want);
		json_decref(root);
	}

	/* "created" and "config" are optional */
	json_t *root = json_deep_copy(orig);
	json_object_del(manifest_of(root), "created");
	struct bundle *b = parse_ok(root);
	bundle_free(b);
	json_decref(root);

	struct {
		const char *key;
		json_t *value;
		const char *needle;
	} bad[] = {
		{"name", json_string(""), "manifest \"name\" must be a non-empty string"},
		{"name", json_integer(3), "manifest \"name\" must be a non-empty string"},
		{"name", json_string("../evil"), "manifest name \"../evil\" is not a module name"},
		{"name", json_string(".hidden"), "is not a module name"},
		{"version", json_string("1.0/../../x"), "manifest version \"1.0/../../x\""},
		{"version", json_string("-rf"), "manifest version \"-rf\" is not usable"},
		{"abi", json_string("1"), "manifest abi \"1\" is not MAJOR.MINOR"},
		{"abi", json_string("1.x"), "is not MAJOR.MINOR"},
		{"abi", json_string("1.2.3"), "is not MAJOR.MINOR"},
		{"abi", json_string(" 1.2"), "is not MAJOR.MINOR"},
		{"sha256", json_string("abc"), "manifest sha256 \"abc\" is not 64 hex digits"},
		{"size", json_string("30000"), "manifest size must be a number of bytes"},
		{"size", json_integer(0), "manifest size must be a number of bytes"},
		{"size", json_integer(-5), "manifest size must be a number of bytes"},
		{"config", json_pack("[i]", 1), "manifest config must be an object"},
		{"created", json_integer(5), "manifest \"created\" must be a non-empty string"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		root = json_deep_copy(orig);
		json_object_set_new(manifest_of(root), bad[i].key, bad[i].value);
		parse_fails(root, PLANT_E_INVALID, bad[i].needle);
		json_decref(root);
	}

	/* an upper-case sha256 is the same digest */
	root = json_deep_copy(orig);
	char upper[65];
	tu_fmt(upper, sizeof upper, "%s",
	       json_string_value(json_object_get(manifest_of(root), "sha256")));
	for (char *p = upper; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	json_object_set_new(manifest_of(root), "sha256", json_string(upper));
	b = parse_ok(root);
	assert_string_equal(bundle_sha256(b),
			    json_string_value(json_object_get(manifest_of(orig), "sha256")));
	bundle_free(b);
	json_decref(root);

	/* members this version does not know are kept */
	root = json_deep_copy(orig);
	json_object_set_new(manifest_of(root), "x_future", json_true());
	b = parse_ok(root);
	assert_true(json_is_true(json_object_get(bundle_manifest(b), "x_future")));
	bundle_free(b);
	json_decref(root);

	root = json_deep_copy(orig);
	json_object_del(root, "manifest");
	parse_fails(root, PLANT_E_INVALID, "no \"manifest\"");
	json_object_set_new(root, "manifest", json_string("m"));
	parse_fails(root, PLANT_E_INVALID, "\"manifest\" must be an object");
	json_decref(root);
	json_decref(orig);
}

static void test_wrong_format(void **state)
{
	(void)state;
	json_t *root = pack_good(NULL, NULL);
	json_object_set_new(root, "format", json_string("plantd-bundle/2"));
	parse_fails(root, PLANT_E_INVALID, "format plantd-bundle/2 is not supported");
	json_object_set_new(root, "format", json_integer(1));
	parse_fails(root, PLANT_E_INVALID,
		    "is not supported (this plantd reads \"plantd-bundle/1\")");
	json_object_del(root, "format");
	parse_fails(root, PLANT_E_INVALID, "no \"format\" member: not a plantd bundle");
	json_decref(root);

	parse_text_fails("", "not JSON");
	parse_text_fails("{\"format\": ", "not JSON");
	parse_text_fails("[1, 2]", "not a JSON object");
	parse_text_fails("{\"format\": \"plantd-bundle/1\", \"format\": \"plantd-bundle/1\"}",
			 "duplicate");

	/* a NULL origin is named too */
	struct bundle *b = NULL;
	assert_int_equal(bundle_parse("[]", 2, NULL, &b, errbuf, sizeof errbuf), PLANT_E_INVALID);
	assert_contains(errbuf, "(memory)");
}

/* ---- ABI --------------------------------------------------------------------------- */

static void check_abi_of(const json_t *orig, const char *abi, int want)
{
	json_t *root = json_deep_copy(orig);
	json_object_set_new(manifest_of(root), "abi", json_string(abi));
	struct bundle *b = parse_ok(root);
	errbuf[0] = '\0';
	assert_int_equal(bundle_check_abi(b, errbuf, sizeof errbuf), want);
	if (want != PLANT_OK) {
		char text[128];
		tu_fmt(text, sizeof text,
		       "bundle test.bundle: module fx_good built for SDK %s, host provides %d.%d",
		       abi, PLANT_ABI_MAJOR, PLANT_ABI_MINOR);
		assert_string_equal(errbuf, text);
	}
	bundle_free(b);
	json_decref(root);
}

static void test_abi(void **state)
{
	(void)state;
	json_t *root = pack_good(NULL, NULL);
	char abi[32];
	tu_fmt(abi, sizeof abi, "%d.%d", PLANT_ABI_MAJOR, PLANT_ABI_MINOR + 1);
	check_abi_of(root, abi, PLANT_E_ABI); /* a newer minor */
	tu_fmt(abi, sizeof abi, "%d.0", PLANT_ABI_MAJOR + 1);
	check_abi_of(root, abi, PLANT_E_ABI); /* another major */
	tu_fmt(abi, sizeof abi, "%d.0", PLANT_ABI_MAJOR - 1);
	check_abi_of(root, abi, PLANT_E_ABI); /* an older major */
	tu_fmt(abi, sizeof abi, "%d.0", PLANT_ABI_MAJOR);
	check_abi_of(root, abi, PLANT_OK); /* an older minor */
	tu_fmt(abi, sizeof abi, "%d.%d", PLANT_ABI_MAJOR, PLANT_ABI_MINOR);
	check_abi_of(root, abi, PLANT_OK);
	json_decref(root);
}

/* ---- signatures --------------------------------------------------------------------- */

static void test_signature(void **state)
{
	(void)state;
	char id_a[17], id_b[17], id_a_priv[17];
	assert_int_equal(bundle_key_file_id(pub_a, id_a, errbuf, sizeof errbuf), PLANT_OK);
	assert_int_equal(bundle_key_file_id(priv_a, id_a_priv, errbuf, sizeof errbuf), PLANT_OK);
	assert_int_equal(bundle_key_file_id(pub_b, id_b, errbuf, sizeof errbuf), PLANT_OK);
	assert_string_equal(id_a, id_a_priv);
	assert_string_not_equal(id_a, id_b);

	json_t *root = pack_good(NULL, priv_a);
	const json_t *sig = json_object_get(root, "signature");
	assert_string_equal(json_string_value(json_object_get(sig, "alg")), "ed25519");
	assert_string_equal(json_string_value(json_object_get(sig, "key_id")), id_a);

	struct bundle *b = parse_ok(root);
	assert_int_equal(bundle_signed(b), 1);
	assert_string_equal(bundle_key_id(b), id_a);
	const char *only_a[] = {pub_a};
	const char *only_b[] = {pub_b};
	const char *b_then_a[] = {pub_b, pub_a};
	assert_int_equal(bundle_verify(b, only_a, 1, 1, errbuf, sizeof errbuf), PLANT_OK);
	assert_int_equal(bundle_verify(b, only_a, 1, 0, errbuf, sizeof errbuf), PLANT_OK);
	assert_int_equal(bundle_verify(b, b_then_a, 2, 1, errbuf, sizeof errbuf), PLANT_OK);

	/* an unknown key: refused, required or not, naming the key */
	char want[256];
	tu_fmt(want, sizeof want,
	       "bundle test.bundle is signed by key %s, which is not among the trusted keys "
	       "(%s in %s)",
	       id_a, id_b, pub_b);
	for (int required = 0; required < 2; required++) {
		assert_int_equal(bundle_verify(b, only_b, 1, required, errbuf, sizeof errbuf),
				 PLANT_E_INVALID);
		assert_string_equal(errbuf, want);
	}

	/* no keys: not checked unless required, then a site error */
	assert_int_equal(bundle_verify(b, NULL, 0, 0, errbuf, sizeof errbuf), PLANT_OK);
	assert_int_equal(bundle_verify(b, NULL, 0, 1, errbuf, sizeof errbuf), PLANT_E_CONFIG);
	assert_contains(errbuf, "requires signatures but trusts no keys");
	bundle_free(b);

	/* the manifest changed after signing (a version bump): bad signature */
	json_t *t = json_deep_copy(root);
	json_object_set_new(manifest_of(t), "version", json_string("9.9.9"));
	b = parse_ok(t);
	for (int required = 0; required < 2; required++) {
		assert_int_equal(bundle_verify(b, only_a, 1, required, errbuf, sizeof errbuf),
				 PLANT_E_INVALID);
		tu_fmt(want, sizeof want, "bundle test.bundle: bad signature by key %s", id_a);
		assert_contains(errbuf, want);
	}
	bundle_free(b);
	json_decref(t);

	/* a config added after signing: the same */
	t = json_deep_copy(root);
	json_object_set_new(manifest_of(t), "config", json_pack("{s:b}", "debug", 1));
	b = parse_ok(t);
	assert_int_equal(bundle_verify(b, only_a, 1, 1, errbuf, sizeof errbuf), PLANT_E_INVALID);
	assert_contains(errbuf, "bad signature");
	bundle_free(b);
	json_decref(t);

	/* a key_id swapped for a trusted key's: the signature is still A's */
	t = json_deep_copy(root);
	json_object_set_new(json_object_get(t, "signature"), "key_id", json_string(id_b));
	b = parse_ok(t);
	assert_int_equal(bundle_verify(b, only_b, 1, 1, errbuf, sizeof errbuf), PLANT_E_INVALID);
	assert_contains(errbuf, "bad signature");
	bundle_free(b);
	json_decref(t);

	/* the signature itself changed */
	t = json_deep_copy(root);
	const char *s = json_string_value(json_object_get(json_object_get(t, "signature"), "sig"));
	char flipped[128];
	tu_fmt(flipped, sizeof flipped, "%s", s);
	flipped[0] = flipped[0] == 'A' ? 'B' : 'A';
	json_object_set_new(json_object_get(t, "signature"), "sig", json_string(flipped));
	b = parse_ok(t);
	assert_int_equal(bundle_verify(b, only_a, 1, 0, errbuf, sizeof errbuf), PLANT_E_INVALID);
	assert_contains(errbuf, "bad signature");
	bundle_free(b);
	json_decref(t);

	/* the signature's shape is checked when parsing */
	struct {
		const char *key;
		json_t *value;
		const char *needle;
	} bad[] = {
		{"alg", json_string("rsa"), "signature algorithm \"rsa\" is not supported"},
		{"key_id", json_string("xyz"), "signature key_id \"xyz\" is not 16 hex digits"},
		{"sig", json_string("QUJD"), "signature sig is not the base64 of 64 bytes"},
		{"sig", json_string("!!!!"), "signature sig is not the base64 of 64 bytes"},
		{"sig", json_integer(1), "signature needs the strings"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		t = json_deep_copy(root);
		json_object_set_new(json_object_get(t, "signature"), bad[i].key, bad[i].value);
		parse_fails(t, PLANT_E_INVALID, bad[i].needle);
		json_decref(t);
	}
	t = json_deep_copy(root);
	json_object_set_new(t, "signature", json_string("x"));
	parse_fails(t, PLANT_E_INVALID, "signature must be an object");
	json_decref(t);
	json_decref(root);

	/* unsigned, required: refused whatever the keys */
	root = pack_good(NULL, NULL);
	b = parse_ok(root);
	assert_int_equal(bundle_verify(b, only_a, 1, 1, errbuf, sizeof errbuf), PLANT_E_INVALID);
	assert_string_equal(errbuf,
			    "bundle test.bundle is not signed and the site requires signatures");
	assert_int_equal(bundle_verify(b, NULL, 0, 1, errbuf, sizeof errbuf), PLANT_E_INVALID);
	assert_contains(errbuf, "is not signed");
	bundle_free(b);
	json_decref(root);
}

static void test_bad_key_files(void **state)
{
	(void)state;
	json_t *root = pack_good(NULL, priv_a);
	struct bundle *b = parse_ok(root);
	char missing[PATH_MAX];
	tu_join(missing, sizeof missing, key_dir, "missing.pem");

	/* trusted keys that are not ed25519 public keys: a site error,
	 * even when another key would have matched */
	const char *ec[] = {pub_a, pub_ec};
	assert_int_equal(bundle_verify(b, ec, 2, 0, errbuf, sizeof errbuf), PLANT_E_CONFIG);
	assert_contains(errbuf, pub_ec);
	assert_contains(errbuf, "not an ed25519 key");
	const char *priv[] = {priv_a};
	assert_int_equal(bundle_verify(b, priv, 1, 1, errbuf, sizeof errbuf), PLANT_E_CONFIG);
	assert_contains(errbuf, "not a PEM public key");
	const char *gone[] = {missing};
	assert_int_equal(bundle_verify(b, gone, 1, 1, errbuf, sizeof errbuf), PLANT_E_CONFIG);
	assert_contains(errbuf, "trusted key");
	assert_contains(errbuf, missing);
	bundle_free(b);
	json_decref(root);

	/* signing keys */
	json_t *out = NULL;
	assert_int_equal(bundle_pack(good_so, NULL, pub_a, &out, errbuf, sizeof errbuf),
			 PLANT_E_CONFIG);
	assert_contains(errbuf, "signing key");
	assert_contains(errbuf, "not a PEM private key");
	assert_int_equal(bundle_pack(good_so, NULL, missing, &out, errbuf, sizeof errbuf),
			 PLANT_E_CONFIG);
	assert_contains(errbuf, missing);
	assert_null(out);
	char id[17];
	assert_int_equal(bundle_key_file_id(pub_ec, id, errbuf, sizeof errbuf), PLANT_E_CONFIG);
	assert_contains(errbuf, "not an ed25519 key");
}

/* ---- packing refusals ------------------------------------------------------------------- */

static void test_pack_refusals(void **state)
{
	(void)state;
	json_t *out = NULL;
	char file[PATH_MAX];

	tu_join(file, sizeof file, fixture_dir, "fx_no_desc.so");
	assert_int_equal(bundle_pack(file, NULL, NULL, &out, errbuf, sizeof errbuf),
			 PLANT_E_INVALID);
	assert_contains(errbuf, file);
	assert_contains(errbuf, "no plantd descriptor");

	tu_join(file, sizeof file, fixture_dir, "fx_major2.so");
	assert_int_equal(bundle_pack(file, NULL, NULL, &out, errbuf, sizeof errbuf), PLANT_E_ABI);
	assert_contains(errbuf, "built for SDK 2.");

	/* a newer minor of this major packs: the host decides */
	tu_join(file, sizeof file, fixture_dir, "fx_newer_minor.so");
	assert_int_equal(bundle_pack(file, NULL, NULL, &out, errbuf, sizeof errbuf), PLANT_OK);
	struct bundle *b = parse_ok(out);
	assert_int_equal(bundle_check_abi(b, errbuf, sizeof errbuf), PLANT_E_ABI);
	bundle_free(b);
	json_decref(out);
	out = NULL;

	tu_join(file, sizeof file, fixture_dir, "no_such.so");
	assert_int_equal(bundle_pack(file, NULL, NULL, &out, errbuf, sizeof errbuf), PLANT_E_IO);
	assert_contains(errbuf, file);

	tu_join(file, sizeof file, key_dir, "a.pub.pem");
	assert_int_equal(bundle_pack(file, NULL, NULL, &out, errbuf, sizeof errbuf),
			 PLANT_E_INVALID);
	assert_contains(errbuf, "not a loadable shared object");

	json_t *arr = json_array();
	assert_int_equal(bundle_pack(good_so, arr, NULL, &out, errbuf, sizeof errbuf),
			 PLANT_E_INVALID);
	assert_contains(errbuf, "must be a JSON object");
	json_decref(arr);
	assert_null(out);

	/* SOURCE_DATE_EPOCH makes "created" reproducible */
	setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
	out = pack_good(NULL, NULL);
	assert_string_equal(json_string_value(json_object_get(manifest_of(out), "created")),
			    "2023-11-14T22:13:20Z");
	json_decref(out);
	out = NULL;
	setenv("SOURCE_DATE_EPOCH", "soon", 1);
	assert_int_equal(bundle_pack(good_so, NULL, NULL, &out, errbuf, sizeof errbuf),
			 PLANT_E_INVALID);
	assert_contains(errbuf, "SOURCE_DATE_EPOCH");
	unsetenv("SOURCE_DATE_EPOCH");
}

/* ---- writing the module ------------------------------------------------------------------ */

static void test_write_module(void **state)
{
	(void)state;
	char *tmp = tu_mkdtemp();
	char dir[PATH_MAX], path[PATH_MAX], again[PATH_MAX], want[PATH_MAX];
	tu_join(dir, sizeof dir, tmp, "a/b/modules"); /* made as by mkdir -p */
	json_t *root = pack_good(NULL, NULL);
	struct bundle *b = parse_ok(root);

	assert_int_equal(bundle_write_module(b, dir, path, sizeof path, errbuf, sizeof errbuf),
			 PLANT_OK);
	tu_fmt(want, sizeof want, "%s/fx_good-0.0.1-%.12s.so", dir, bundle_sha256(b));
	assert_string_equal(path, want);
	size_t len, wlen;
	char *orig = file_bytes(good_so, &len);
	char *written = file_bytes(path, &wlen);
	assert_int_equal(wlen, len);
	assert_memory_equal(written, orig, len);
	free(written);
	struct stat st1, st2;
	assert_int_equal(stat(path, &st1), 0);
	assert_int_equal(st1.st_mode & 0777, 0644);
	mode_t mask = umask(0);
	umask(mask);
	assert_int_equal(stat(dir, &st2), 0);
	assert_true(S_ISDIR(st2.st_mode));
	assert_int_equal(st2.st_mode & 0777, 0755 & ~mask);

	/* the same content again: the same file, untouched */
	assert_int_equal(bundle_write_module(b, dir, again, sizeof again, errbuf, sizeof errbuf),
			 PLANT_OK);
	assert_string_equal(again, path);
	assert_int_equal(stat(path, &st2), 0);
	assert_int_equal(st2.st_ino, st1.st_ino);
	assert_int_equal(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);
	assert_int_equal(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);

	/* the written module loads, and is what the bundle says */
	struct module *mod = NULL;
	if (loader_open(path, &mod, errbuf, sizeof errbuf) != PLANT_OK)
		fail_msg("loader_open(%s): %s", path, errbuf);
	assert_string_equal(mod->desc->name, "fx_good");
	loader_close(mod);

	/* a damaged file under that name is replaced (a new file: the loaded
	 * one stays mapped, and truncating it would fault its readers) */
	assert_int_equal(unlink(path), 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("garbage", f);
	fclose(f);
	assert_int_equal(bundle_write_module(b, dir, again, sizeof again, errbuf, sizeof errbuf),
			 PLANT_OK);
	written = file_bytes(path, &wlen);
	assert_int_equal(wlen, len);
	assert_memory_equal(written, orig, len);
	free(written);

	/* no temporary files are left behind */
	DIR *d = opendir(dir);
	assert_non_null(d);
	int entries = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")))
			entries++;
	closedir(d);
	assert_int_equal(entries, 1);

	/* another version is another file */
	json_t *v2 = json_deep_copy(root);
	json_object_set_new(manifest_of(v2), "version", json_string("0.0.2"));
	struct bundle *b2 = parse_ok(v2);
	assert_int_equal(bundle_write_module(b2, dir, again, sizeof again, errbuf, sizeof errbuf),
			 PLANT_OK);
	assert_string_not_equal(again, path);
	assert_contains(again, "fx_good-0.0.2-");
	bundle_free(b2);
	json_decref(v2);

	/* a path_out too small, a directory that cannot be made */
	char small[16];
	assert_int_equal(bundle_write_module(b, dir, small, sizeof small, errbuf, sizeof errbuf),
			 PLANT_E_INVALID);
	assert_contains(errbuf, "too long");
	char blocked[PATH_MAX];
	tu_join(blocked, sizeof blocked, path, "sub"); /* under a file */
	assert_int_equal(
		bundle_write_module(b, blocked, again, sizeof again, errbuf, sizeof errbuf),
		PLANT_E_IO);
	assert_contains(errbuf, blocked);

	free(orig);
	bundle_free(b);
	json_decref(root);
	tu_rmtree(tmp);
	free(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_read_file),
		cmocka_unit_test(test_sha256_mismatch),
		cmocka_unit_test(test_bad_base64),
		cmocka_unit_test(test_missing_and_bad_fields),
		cmocka_unit_test(test_wrong_format),
		cmocka_unit_test(test_abi),
		cmocka_unit_test(test_signature),
		cmocka_unit_test(test_bad_key_files),
		cmocka_unit_test(test_pack_refusals),
		cmocka_unit_test(test_write_module),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
