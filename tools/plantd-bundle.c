/* plantd-bundle: packs a built plugin module into a bundle (one JSON file
 * with the module, its manifest and an optional ed25519 signature), and
 * checks or shows a bundle as plantd reads it. The format is described at
 * the top of host/bundle.h.
 *
 * Exit status: 0 on success, 1 when a file or the bundle is refused (the
 * reason on stderr), 2 for a bad command line. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"

#define EXIT_FAIL  1
#define EXIT_USAGE 2
#define MAX_KEYS   64

#define STR_(x) #x
#define STR(x)	STR_(x)
#define SDK_ABI STR(PLANT_ABI_MAJOR) "." STR(PLANT_ABI_MINOR)

/* What one command line asks for. */
struct opts {
	const char *config;   /* pack --config JSON */
	const char *sign_key; /* pack --sign-key */
	const char *output;   /* pack --output */
	const char *keys[MAX_KEYS];
	size_t n_keys;	       /* verify --trusted-key, repeated */
	int require_signature; /* verify --require-signature */
};

struct command {
	const char *name;
	const char *args;
	const char *summary; /* one line for the list of commands */
	const char *help;    /* the rest of `COMMAND --help` */
	int (*run)(const struct opts *o, const char *arg);
};

static void print_summary(const json_t *manifest, const char *key_id)
{
	const char *created = json_string_value(json_object_get(manifest, "created"));
	const json_t *config = json_object_get(manifest, "config");
	printf("  name     %s\n", json_string_value(json_object_get(manifest, "name")));
	printf("  version  %s\n", json_string_value(json_object_get(manifest, "version")));
	printf("  abi      %s\n", json_string_value(json_object_get(manifest, "abi")));
	printf("  sha256   %s\n", json_string_value(json_object_get(manifest, "sha256")));
	printf("  size     %" JSON_INTEGER_FORMAT " bytes\n",
	       json_integer_value(json_object_get(manifest, "size")));
	if (created)
		printf("  created  %s\n", created);
	if (config) {
		char *text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
		printf("  config   %s\n", text ? text : "?");
		free(text);
	}
	if (key_id)
		printf("  signed   yes, key %s\n", key_id);
	else
		printf("  signed   no\n");
}

/* Write `root` to `out` through a hidden temporary file in the same
 * directory and a rename: whoever watches the directory for *.bundle sees
 * the whole file or nothing. */
static int write_bundle(const json_t *root, const char *out)
{
	char dir_buf[PATH_MAX], base_buf[PATH_MAX], tmp[PATH_MAX];
	snprintf(dir_buf, sizeof dir_buf, "%s", out);
	snprintf(base_buf, sizeof base_buf, "%s", out);
	int n = snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dirname(dir_buf), basename(base_buf));
	if (n < 0 || (size_t)n >= sizeof tmp) {
		fprintf(stderr, "plantd-bundle: %s: file name too long\n", out);
		return EXIT_FAIL;
	}
	int fd = mkstemp(tmp);
	if (fd < 0) {
		fprintf(stderr, "plantd-bundle: cannot write %s: %s\n", out, strerror(errno));
		return EXIT_FAIL;
	}
	int ok = fchmod(fd, 0644) == 0 && json_dumpfd(root, fd, JSON_INDENT(2)) == 0 &&
		 write(fd, "\n", 1) == 1 && fsync(fd) == 0;
	int e = errno;
	if (close(fd) != 0 && ok) {
		ok = 0;
		e = errno;
	}
	if (ok && rename(tmp, out) != 0) {
		ok = 0;
		e = errno;
	}
	if (!ok) {
		unlink(tmp);
		fprintf(stderr, "plantd-bundle: cannot write %s: %s\n", out, strerror(e));
		return EXIT_FAIL;
	}
	return 0;
}

static int run_pack(const struct opts *o, const char *so_path)
{
	char err[1024];
	json_t *config = NULL, *root = NULL;
	if (o->config) {
		json_error_t jerr;
		config = json_loads(o->config, 0, &jerr);
		if (!json_is_object(config)) {
			fprintf(stderr, "plantd-bundle: --config needs a JSON object%s%s\n",
				config ? "" : ": ", config ? "" : jerr.text);
			json_decref(config);
			return EXIT_USAGE;
		}
	}
	int rc = bundle_pack(so_path, config, o->sign_key, &root, err, sizeof err);
	json_decref(config);
	if (rc) {
		fprintf(stderr, "plantd-bundle: %s\n", err);
		return EXIT_FAIL;
	}
	const json_t *manifest = json_object_get(root, "manifest");
	char def[PATH_MAX];
	const char *out = o->output;
	if (!out) {
		snprintf(def, sizeof def, "%s-%s.bundle",
			 json_string_value(json_object_get(manifest, "name")),
			 json_string_value(json_object_get(manifest, "version")));
		out = def;
	}
	if (write_bundle(root, out) != 0) {
		json_decref(root);
		return EXIT_FAIL;
	}
	printf("wrote %s\n", out);
	print_summary(manifest, json_string_value(json_object_get(
					json_object_get(root, "signature"), "key_id")));
	json_decref(root);
	return 0;
}

static int run_verify(const struct opts *o, const char *path)
{
	char err[1024];
	struct bundle *b;
	if (bundle_read(path, &b, err, sizeof err) != PLANT_OK) {
		fprintf(stderr, "plantd-bundle: %s\n", err);
		return EXIT_FAIL;
	}
	printf("bundle %s\n", path);
	print_summary(bundle_manifest(b), bundle_key_id(b));
	fflush(stdout);
	int rc = bundle_check_abi(b, err, sizeof err);
	if (!rc)
		rc = bundle_verify(b, o->keys, o->n_keys, o->require_signature, err, sizeof err);
	if (rc) {
		fprintf(stderr, "plantd-bundle: %s\n", err);
		bundle_free(b);
		return EXIT_FAIL;
	}
	if (!bundle_signed(b))
		printf("OK (not signed)\n");
	else if (o->n_keys)
		printf("OK (signature by key %s verified)\n", bundle_key_id(b));
	else
		printf("OK (signed by key %s, not checked: no --trusted-key)\n", bundle_key_id(b));
	bundle_free(b);
	return 0;
}

static int run_show(const struct opts *o, const char *path)
{
	char err[1024];
	struct bundle *b;
	if (bundle_read(path, &b, err, sizeof err) != PLANT_OK) {
		fprintf(stderr, "plantd-bundle: %s\n", err);
		return EXIT_FAIL;
	}
	char *text = json_dumps(bundle_manifest(b), JSON_INDENT(2));
	bundle_free(b);
	if (!text) {
		fprintf(stderr, "plantd-bundle: out of memory\n");
		return EXIT_FAIL;
	}
	printf("%s\n", text);
	free(text);
	return 0;
}

static const struct command commands[] = {
	{"pack", "FILE.so [-c JSON] [-k KEY.pem] [-o OUT]",
	 "make a bundle of a built plugin module",
	 "Reads the module's name, version and SDK ABI from its descriptor (the\n"
	 "module is loaded: pack only what you built), and writes the module,\n"
	 "its sha256 and size, the settings fragment and the time (UTC, or\n"
	 "$SOURCE_DATE_EPOCH) into OUT, by default NAME-VERSION.bundle in the\n"
	 "current directory. OUT appears at once, complete (written beside it\n"
	 "under a hidden name, then renamed). Prints the file, then the manifest.\n"
	 "\n"
	 "  -c, --config JSON       settings for the instance (a JSON object),\n"
	 "                          carried in the manifest\n"
	 "  -k, --sign-key KEY.pem  sign the manifest with this ed25519 private key\n"
	 "                          (PEM, unencrypted)\n"
	 "  -o, --output OUT        the bundle file to write\n",
	 run_pack},
	{"verify", "BUNDLE [-K PUB.pem]... [--require-signature]",
	 "check a bundle as plantd does before deploying it",
	 "Checks the format, the manifest, the module's size and sha256, the SDK\n"
	 "ABI against this build's (" SDK_ABI ": the same major, a minor no newer)\n"
	 "and the signature. Prints the manifest, then OK; or the reason on\n"
	 "stderr and exits 1.\n"
	 "\n"
	 "A signed bundle is checked whenever trusted keys are given: its key\n"
	 "must be one of them and the signature valid. Without keys a signature\n"
	 "is not checked (the OK line says so); with --require-signature and no\n"
	 "keys nothing passes.\n"
	 "\n"
	 "  -K, --trusted-key PUB.pem  a trusted ed25519 public key (PEM); repeat\n"
	 "                             for more\n"
	 "      --require-signature    refuse a bundle without a valid signature\n",
	 run_verify},
	{"show", "BUNDLE", "print a bundle's manifest as JSON",
	 "Prints the manifest (after the checks of the format, size and sha256;\n"
	 "not the signature's: see verify).\n",
	 run_show},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
	fprintf(f, "usage: plantd-bundle COMMAND [options] ARG\n"
		   "\n"
		   "A plugin bundle is one JSON file: a plugin module (base64), its manifest\n"
		   "(name, version, SDK ABI, sha256, size, optional settings, creation time)\n"
		   "and an optional ed25519 signature over the manifest, for deploying a\n"
		   "plugin version to plantd.\n"
		   "\n"
		   "Commands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f,
		"\n"
		"Options:\n"
		"  -c, --config JSON          pack: settings (an object) for the manifest\n"
		"  -k, --sign-key KEY.pem     pack: sign with this ed25519 private key\n"
		"  -o, --output OUT           pack: the file to write (default\n"
		"                             NAME-VERSION.bundle)\n"
		"  -K, --trusted-key PUB.pem  verify: a trusted public key (repeatable)\n"
		"      --require-signature    verify: refuse unsigned bundles\n"
		"  -h, --help                 this text; plantd-bundle COMMAND --help:\n"
		"                             that command's\n"
		"  -V, --version              print the version, then exit\n"
		"\n"
		"Format " BUNDLE_FORMAT " (in plantd's sources: host/bundle.h):\n"
		"  {\"format\": \"" BUNDLE_FORMAT "\",\n"
		"   \"manifest\": {\"name\": NAME, \"version\": VERSION, \"abi\": \"MAJOR.MINOR\",\n"
		"                \"sha256\": HEX, \"size\": BYTES, \"config\": {...},\n"
		"                \"created\": \"YYYY-MM-DDTHH:MM:SSZ\"},\n"
		"   \"signature\": {\"alg\": \"ed25519\", \"key_id\": HEX16, \"sig\": BASE64},\n"
		"   \"module\": BASE64}\n"
		"  config, created and signature are optional. sig signs the manifest as\n"
		"  compact JSON with sorted keys (jansson's JSON_COMPACT | JSON_SORT_KEYS;\n"
		"  for plain manifests `jq -jcS .manifest` gives the same text); key_id is\n"
		"  the first 16 hex digits of the sha256 of the raw 32-byte public key.\n"
		"\n"
		"Keys, with the openssl command line:\n"
		"  openssl genpkey -algorithm ed25519 -out key.pem    (private: pack -k)\n"
		"  openssl pkey -in key.pem -pubout -out pub.pem      (public: verify -K)\n"
		"\n"
		"Exit status: 0 on success; 1 when a file or the bundle is refused (the\n"
		"reason on stderr); 2 for a bad command line.\n");
}

static void command_usage(FILE *f, const struct command *cmd)
{
	fprintf(f, "usage: plantd-bundle %s %s\n\n%c%s.\n\n%s", cmd->name, cmd->args,
		toupper((unsigned char)cmd->summary[0]), cmd->summary + 1, cmd->help);
	fprintf(f, "\nExit status: 0 on success; 1 when refused; 2 for a bad command line.\n");
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	enum { OPT_REQUIRE = 256 };
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"sign-key", required_argument, NULL, 'k'},
		{"output", required_argument, NULL, 'o'},
		{"trusted-key", required_argument, NULL, 'K'},
		{"require-signature", no_argument, NULL, OPT_REQUIRE},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {0};
	int help = 0, c;
	while ((c = getopt_long(argc, argv, "c:k:o:K:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o.config = optarg;
			break;
		case 'k':
			o.sign_key = optarg;
			break;
		case 'o':
			if (!*optarg) {
				fprintf(stderr, "plantd-bundle: --output needs a file name\n");
				return EXIT_USAGE;
			}
			o.output = optarg;
			break;
		case 'K':
			if (o.n_keys == MAX_KEYS) {
				fprintf(stderr, "plantd-bundle: at most %d trusted keys\n",
					MAX_KEYS);
				return EXIT_USAGE;
			}
			o.keys[o.n_keys++] = optarg;
			break;
		case OPT_REQUIRE:
			o.require_signature = 1;
			break;
		case 'h':
			help = 1;
			break;
		case 'V':
			printf("plantd-bundle %s (SDK ABI %s, bundle format %s)\n",
			       PLANTD_BUNDLE_VERSION, SDK_ABI, BUNDLE_FORMAT);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	const struct command *cmd = optind < argc ? find_command(argv[optind]) : NULL;
	if (help) {
		if (cmd)
			command_usage(stdout, cmd);
		else
			usage(stdout);
		return 0;
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!cmd) {
		fprintf(stderr, "plantd-bundle: unknown command \"%s\"\n\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (argc - optind != 2) {
		fprintf(stderr, "plantd-bundle: %s takes one argument\n\n", cmd->name);
		command_usage(stderr, cmd);
		return EXIT_USAGE;
	}
	int is_pack = cmd->run == run_pack, is_verify = cmd->run == run_verify;
	if ((o.config || o.sign_key || o.output) && !is_pack) {
		fprintf(stderr,
			"plantd-bundle: --config, --sign-key and --output apply to pack, "
			"not %s\n\n",
			cmd->name);
		command_usage(stderr, cmd);
		return EXIT_USAGE;
	}
	if ((o.n_keys || o.require_signature) && !is_verify) {
		fprintf(stderr,
			"plantd-bundle: --trusted-key and --require-signature apply to "
			"verify, not %s\n\n",
			cmd->name);
		command_usage(stderr, cmd);
		return EXIT_USAGE;
	}
	/* a closed stdout shows as a write error, not a silent death */
	signal(SIGPIPE, SIG_IGN);
	int status = cmd->run(&o, argv[optind + 1]);
	if (fflush(stdout) != 0 && status == 0 && errno != EPIPE) {
		fprintf(stderr, "plantd-bundle: cannot write to stdout: %s\n", strerror(errno));
		status = EXIT_FAIL;
	}
	return status;
}
