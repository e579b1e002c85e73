/*
 * snap_meta.h - the parts of a snapshot entry that travel in frames: its
 * metadata's lifetime and its xattr blob, checked and walked.
 *
 * The blob: u16 count, then per xattr u8 name length, name, u32 value
 * length, value; names sorted by bytes, none of them a node's own
 * trusted.ledgerfs one.  Kept apart from the snapshot's staging and
 * install so that the frame codec (net/) uses it without the store's
 * apply engine.
 */
#ifndef LEDGERFS_SNAP_META_H
#define LEDGERFS_SNAP_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/snapshot.h"

/* One xattr of a blob that snap_xattrs_check() accepted; name is not NUL-terminated. */
struct xent {
	const uint8_t *name;
	size_t name_len;
	const uint8_t *value;
	size_t value_len;
};

/* The entry at *off of a blob that snap_xattrs_check() accepted, advancing
 * *off past it; *off starts at 2. */
void xattr_blob_next(const uint8_t *blob, size_t *off, struct xent *e);

/* Entries of a checked blob; 0 for an empty one. */
unsigned xattr_blob_count(const uint8_t *blob, size_t len);

/* True if the checked blob holds an xattr named like e (and with e's value, if value). */
bool xattr_blob_holds(const uint8_t *blob, size_t len, const struct xent *e, bool value);

#endif
