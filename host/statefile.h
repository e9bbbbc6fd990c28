/* The site's own state files in DATA_DIR (loaded.json, deployed.json):
 * written whole and durably, so that what was answered survives a crash. */
#ifndef PLANTD_STATEFILE_H
#define PLANTD_STATEFILE_H

#include <stddef.h>
#include <jansson.h>

/* Write `doc` as indented JSON (keys sorted) to PATH.tmp, fsync it and
 * rename it over `path`. PLANT_E_IO with "cannot write PATH: why" in err. */
int statefile_save(const char *path, const json_t *doc, char *err, size_t errlen);

#endif
