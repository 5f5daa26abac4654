"""Models of other packages read into equinet: their files are read without importing
those packages and without running their pickles (:mod:`.pickle_reader`)."""
