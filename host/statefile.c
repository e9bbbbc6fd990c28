#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "plantd/plantd.h"

int statefile_save(const char *path, const json_t *doc, char *err, size_t errlen)
{
	char tmp[4200];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		snprintf(err, errlen, "cannot write %s: name too long", path);
		return PLANT_E_IO;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int bad = fd < 0 || json_dumpfd(doc, fd, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 ||
		  write(fd, "\n", 1) != 1 || fsync(fd) != 0;
	int e = errno;
	if (fd >= 0)
		close(fd);
	if (!bad && rename(tmp, path) != 0) {
		bad = 1;
		e = errno;
	}
	if (bad) {
		unlink(tmp);
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
		return PLANT_E_IO;
	}
	return PLANT_OK;
}
