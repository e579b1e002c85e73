/*
 * layer_check.c - the empty program each layer's whole library is linked
 * into (see the layers' meson.build).  Linking every object of one layer
 * against only the layers below it makes the linker refuse a call that
 * goes up the layers, which a normal link of all the libraries would hide.
 */
int main(void)
{
	return 0;
}
